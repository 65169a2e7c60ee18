"""The recipe runner shared by every egs2 recipe (ESPnet2-style stages).

    python -m espnet_mtla.recipe --task asr --stage 1 --stop_stage 10 --train_config conf/train.yaml ...

Run from a recipe dir (egs2/<corpus>/<task>1/), normally through its run.sh. Stages:
 1 data preparation (local/data.sh -> data/<set>/)     7 training
 2 speed perturbation of the training set            8 decoding (--inference_nj jobs)
 3 audio formatting to dump/ (flac|wav|wav.ark|fbank) 9 scoring
 4 length filtering of the training/valid sets       10 RESULTS.md
 5 tokenisers (bpe|char|word; source side for st/mt) 11 packing the model into a zip
 6 statistics collection (ESPnet collect_stats)
Each stage logs to a file under exp/ (named when the stage starts) and stops the run with
that file's name if a job fails. Each stage records that it finished, with the options and
input files it depends on (records.py): re-running the same command skips
finished stages, redoes those whose options or inputs changed, resumes an interrupted
training from its checkpoint and an interrupted decoding from its finished jobs.

Modules: ``options`` (the command line), ``experiment`` (what a run derives from its options:
task, features, sets, directories, commands), ``features`` (raw | fbank | zip | text),
``stage`` + ``stages/`` (the stage table), ``runner`` (records, skip / redo / resume),
``jobs`` + ``backends/`` (this machine, Slurm, SGE), ``records``, ``progress``, ``results``,
``figures``. Nothing here imports torch or ESPnet at start-up.
"""
