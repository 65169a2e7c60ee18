"""The Python API (espnet_mtla.api): load from an exp dir or a packed model, decode files, arrays,
texts and lists; the results equal the batched CLI's."""

import logging
import os
import shutil

import numpy as np
import pytest
import soundfile
import torch

from test_batch_decoding import SECONDS, SOURCES, decode, make_data, make_model, read, score
from espnet_mtla.api import ModelLoadError, load_model
from espnet_mtla.storage.safe_load import UnsafeModelFileError

OPTIONS = dict(beam_size=4, nbest=3, minlenratio=-2, maxlenratio=-7)  # test_batch_decoding.decode's


def make_exp(tmp_path, task, attention_type="mtla"):
    """A tiny random model laid out as a recipe's exp dir: exp/<task>_train_tiny/{config.yaml, valid.acc.ave.pth}."""
    make_model(tmp_path, task, attention_type)
    exp = tmp_path / "recipe" / "exp" / f"{task}_train_tiny"
    exp.mkdir(parents=True)
    shutil.copy(tmp_path / "config.yaml", exp / "config.yaml")
    shutil.copy(tmp_path / "model.pth", exp / "valid.acc.ave.pth")
    return exp


def same(a, b):
    """The same n-best: token ids, and scores to float32 rounding (a batch pads what one input does not)."""
    return ([h.token_ids for h in a.nbest] == [h.token_ids for h in b.nbest]
            and np.allclose([h.score for h in a.nbest], [h.score for h in b.nbest], atol=1e-4))


def inputs_of(tmp_path, task):
    if task == "mt":
        return list(SOURCES)
    return [str(tmp_path / f"u{i}.flac") for i in range(len(SECONDS))]


@pytest.mark.parametrize("task", ["asr", "st", "slu", "mt"])
def test_a_list_decodes_as_the_batched_cli_does(tmp_path, task):
    exp = make_exp(tmp_path, task)
    data = make_data(tmp_path, task)
    ctc = {} if task in ("st", "mt") else {"ctc_weight": 0.0}
    out = decode(tmp_path, task, data, "cli", "--batch_frames", "400")
    model = load_model(exp, **OPTIONS, **ctc)
    results = model(inputs_of(tmp_path, task))
    for n in (1, 2, 3):
        texts, scores = read(out / f"{n}best_recog" / "text"), read(out / f"{n}best_recog" / "score")
        for i, result in enumerate(results):
            hyp = result.nbest[n - 1]
            expected = texts[f"u{i}"].strip()
            assert hyp.text == expected, (n, i)
            assert hyp.score == pytest.approx(score(scores[f"u{i}"]), abs=1e-4)
    if task == "slu":  # "<intent> transcript": the intent apart
        for result in results:
            assert result.intent in ("alarm_set", "play_music", "<unk>") or result.intent is not None
            assert f"{result.intent} {result.text}".strip() == result.nbest[0].text.strip()
    else:
        assert all(r.intent is None and r.text == r.nbest[0].text for r in results)


def test_one_input_an_array_or_a_resampled_array_give_the_file_result(tmp_path, caplog):
    exp = make_exp(tmp_path, "asr")
    make_data(tmp_path, "asr")
    model = load_model(exp, **OPTIONS, ctc_weight=0.3)
    path = tmp_path / "u1.flac"
    samples, rate = soundfile.read(path, dtype="float32")
    from_file = model(str(path))
    assert model(samples).nbest == from_file.nbest
    assert model(torch.from_numpy(samples)).nbest == from_file.nbest
    assert same(model([str(path), (samples, rate)])[1], from_file)
    import soxr

    with caplog.at_level(logging.WARNING, logger="espnet_mtla.api"):
        resampled = model((soxr.resample(samples, 16000, 8000), 8000))
    assert "resampled from 8000 Hz to the model's 16000 Hz" in caplog.text
    assert resampled.text is not None
    stereo = tmp_path / "stereo.wav"
    soundfile.write(stereo, np.stack([samples, samples], axis=1), rate)
    with caplog.at_level(logging.WARNING, logger="espnet_mtla.api"):
        assert model(str(stereo)).nbest[0].token_ids == from_file.nbest[0].token_ids
    assert "2 channels averaged to one" in caplog.text


def test_a_packed_model_loads_as_its_exp_dir(tmp_path):
    from espnet_mtla.storage.packed_model import pack, write_safetensors_copy

    exp = make_exp(tmp_path, "asr")
    make_data(tmp_path, "asr")
    weights = write_safetensors_copy(exp / "valid.acc.ave.pth", exp / "valid.acc.ave.safetensors")
    (tmp_path / "recipe" / "conf").mkdir()
    decode_yaml = tmp_path / "recipe" / "conf" / "decode.yaml"
    decode_yaml.write_text("beam_size: 3\nctc_weight: 0.0\nbatch_frames: 500\n")
    os.chdir(tmp_path / "recipe")  # packed names are relative to the recipe dir, as stage 11 packs
    pack({"asr_model_file": exp / "valid.acc.ave.pth"}, {"asr_train_config": exp / "config.yaml"},
         exp / "asr_train_tiny.zip", extras=[decode_yaml], safetensors_of={"asr_model_file": weights})
    packed = load_model(exp / "asr_train_tiny.zip")
    assert packed.task.name == "asr" and packed.files.model_file.suffix == ".safetensors"
    assert packed.decoding["beam_size"] == 3 and packed.decoding["batch_frames"] == 500  # the packed decode config
    from_dir = load_model(exp)  # the recipe's conf/decode.yaml beside exp/
    assert from_dir.decoding["beam_size"] == 3
    inputs = inputs_of(tmp_path, "asr")
    assert all(same(a, b) for a, b in zip(packed(inputs), from_dir(inputs)))


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_model_file_that_runs_code_is_refused(tmp_path):
    exp = make_exp(tmp_path, "asr")
    torch.save({"weight": RunsCode()}, exp / "valid.acc.ave.pth")
    os.chdir(tmp_path)
    with pytest.raises(UnsafeModelFileError, match=r"valid\.acc\.ave\.pth: refused to load: it needs the pickled "
                                                   r"type posix\.system"):
        load_model(exp)
    assert not (tmp_path / "pwned").exists()


def test_paths_that_are_not_models_are_one_line(tmp_path):
    with pytest.raises(ModelLoadError, match="no such model"):
        load_model(tmp_path / "missing")
    (tmp_path / "exp" / "asr_x").mkdir(parents=True)
    with pytest.raises(ModelLoadError, match="no config.yaml"):
        load_model(tmp_path / "exp" / "asr_x")
    exp = make_exp(tmp_path, "asr")
    renamed = exp.with_name("tiny")
    exp.rename(renamed)
    with pytest.raises(ModelLoadError, match="cannot tell its task from the name.*pass task="):
        load_model(renamed)
    assert load_model(renamed, task="asr").task.name == "asr"
    with pytest.raises(TypeError, match="unknown decoding options beam"):
        load_model(renamed, task="asr", beam=3)


def test_text_models_take_text_and_speech_models_audio(tmp_path):
    exp = make_exp(tmp_path, "mt")
    model = load_model(exp, **OPTIONS)
    with pytest.raises(ValueError, match="input: a mt model takes source text"):
        model(np.zeros(10))
    assert same(model("ab"), model(["ab"])[0])


def test_an_empty_best_hypothesis_is_logged_with_the_best_non_empty_one(tmp_path, caplog):
    """A length cost large enough for <eos> first to win: a warning per input, with the best
    non-empty hypothesis' score beside the empty one's."""
    exp = make_exp(tmp_path, "asr")
    make_data(tmp_path, "asr")
    model = load_model(exp, beam_size=4, ctc_weight=0.0, penalty=-30.0)
    with caplog.at_level(logging.WARNING):
        results = model(inputs_of(tmp_path, "asr")[:2])
    assert [r.text for r in results] == ["", ""]
    lines = sorted(r.getMessage() for r in caplog.records if "decoded to nothing" in r.getMessage())
    assert [line.split(": the empty hypothesis scored ")[0] for line in lines] == [
        "utterance 0: decoded to nothing", "utterance 1: decoded to nothing"]
    assert all("the best non-empty one -" in line or "no non-empty hypothesis ended" in line for line in lines)
