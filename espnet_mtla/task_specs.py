"""The tasks: one ``TaskSpec`` each, the one place a task's facts are written.

    task  input                ESPnet task / inference object   targets (data dir files)       metrics
    asr   speech               ASRTask / Speech2Text            text                           wer, cer
    st    speech               STTask / Speech2Text             text.<tgt_lang> (+ source)     bleu, chrf
    slu   speech               SLUTask / Speech2Understand      text ("<intent> transcript")   intent
    mt    text.<src_lang>      MTTask / Text2Text               text                           rouge

The mt task serves summarisation (XSum, hence ROUGE) and translation alike: a recipe names
its metrics with the pipeline's ``--metrics`` (the MT mini recipe: ``--metrics bleu``).

This module imports nothing from ESPnet (nor torch): the recipe driver, the CLIs and the
ESPnet registration (``espnet_mtla.tasks.registration``) all read it; classes are named, and loaded where
ESPnet is.
"""

import importlib
from dataclasses import dataclass
from typing import Dict, Mapping, Tuple


@dataclass(frozen=True)
class TaskSpec:
    """One task.

    Args:
        name: ``--task`` word; also ESPnet's (``espnet2.tasks.<name>``, ``espnet2.bin.<name>_train``,
            ``espnet2.bin.<name>_inference``, ``--<name>_train_config``, ``--<name>_model_file``).
        espnet_task: the task class in ``espnet2.tasks.<name>``.
        inference_class: the inference object's class in ``espnet2.bin.<name>_inference``.
        model_attribute: ``x`` of the inference object's ``x_model`` and ``x_train_args``.
        input_name: the model input ESPnet names (``speech`` or ``src_text``).
        text_files: ESPnet data name -> file of a data dir; ``{src_lang}``/``{tgt_lang}`` filled in.
        metrics: the pipeline's default ``--metrics`` (names of ``espnet_mtla.metrics.scoring.METRICS``).
        model: our model class (``"module:Name"``) registered as ESPnet's ``model: decoder_only``;
            for a task without a model choice (st), what ESPnet builds instead of its model class.
    """

    name: str
    espnet_task: str
    inference_class: str
    model_attribute: str
    input_name: str
    text_files: Mapping[str, str]
    metrics: Tuple[str, ...]
    model: str

    @property
    def speech(self) -> bool:
        return self.input_name == "speech"

    @property
    def source_text(self) -> bool:
        """Whether the task has source-side text (its own token list and BPE model)."""
        return "src_text" in self.text_files

    def text_names(self, src_lang: str, tgt_lang: str) -> Dict[str, str]:
        """ESPnet data name -> file of a data dir, e.g. st: {"text": "text.de", "src_text": "text.en"}."""
        return {name: file.format(src_lang=src_lang, tgt_lang=tgt_lang) for name, file in self.text_files.items()}

    def espnet_module(self, kind: str) -> str:
        """ESPnet's ``train`` or ``inference`` entry point module."""
        return f"espnet2.bin.{self.name}_{kind}"

    def load_model(self):
        module, _, name = self.model.partition(":")
        return getattr(importlib.import_module(module), name)


TASKS: Dict[str, TaskSpec] = {spec.name: spec for spec in (
    TaskSpec("asr", "ASRTask", "Speech2Text", "asr", "speech", {"text": "text"}, ("wer", "cer"),
             "espnet_mtla.models.asr:DecoderOnlyASRModel"),
    TaskSpec("st", "STTask", "Speech2Text", "st", "speech",
             {"text": "text.{tgt_lang}", "src_text": "text.{src_lang}"}, ("bleu", "chrf"),
             "espnet_mtla.models.st:build_st_model"),
    TaskSpec("slu", "SLUTask", "Speech2Understand", "asr", "speech", {"text": "text"}, ("intent",),
             "espnet_mtla.models.slu:DecoderOnlySLUModel"),
    TaskSpec("mt", "MTTask", "Text2Text", "mt", "src_text", {"text": "text", "src_text": "text.{src_lang}"},
             ("rouge",), "espnet_mtla.models.mt:DecoderOnlyMTModel"),
)}


LM_TASK = "lm"  # ESPnet's lm task: language models for shallow fusion (espnet_mtla.lm); not a recipe task


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]
