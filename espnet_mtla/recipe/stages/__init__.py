"""The stage table: one class per stage, each with its readiness, record and run side by side.

     1 data           stages/data.py     local/data.sh -> data/<set>/
     2 speed_perturb  stages/data.py     sox speed copies of the training set
     3 format         stages/data.py     audio (flac|wav|ark) or fbank (ark|zip) to dump/, per job
     4 filter         stages/data.py     duration and empty-text filter of train/valid
     5 tokenizer      stages/tokens.py   bpe|char|word token lists (source side for st/mt)
     6 stats          stages/tokens.py   ESPnet collect_stats, per job
     7 train          stages/train.py    <task>_train, resumable
     8 decode         stages/decode.py   <task>_inference in --inference_nj jobs, resumable
     9 score          stages/decode.py   --metrics -> scores.json
    10 report         stages/report.py   RESULTS.json -> RESULTS.md and figures
    11 pack           stages/report.py   the model as a zip (+ safetensors copy)
    12 lm_stats       stages/lm.py       --use_lm true: the LM's text and shape statistics
    13 lm_train       stages/lm.py       lm_train with --lm_config, resumable
    14 lm_perplexity  stages/lm.py       the LM's perplexity on the dev text

Stages run in the table's order: the LM stages after stage 7 and before stage 8 (which fuses
the LM), as asr.sh trains its LM before decoding; ``--stage``/``--stop_stage`` select by number.
A new stage: a ``Stage`` subclass (espnet_mtla.recipe.stage) and one entry here.
"""

from typing import Dict

from espnet_mtla.recipe.stage import Stage
from espnet_mtla.recipe.stages.data import Data, Filter, Format, SpeedPerturb
from espnet_mtla.recipe.stages.decode import Decode, Score
from espnet_mtla.recipe.stages.lm import LmPerplexity, LmStats, LmTrain
from espnet_mtla.recipe.stages.report import Pack, Report
from espnet_mtla.recipe.stages.tokens import Stats, Tokenizer
from espnet_mtla.recipe.stages.train import Train

STAGES: Dict[int, Stage] = {stage.number: stage for stage in (
    Data(), SpeedPerturb(), Format(), Filter(), Tokenizer(), Stats(), Train(), LmStats(), LmTrain(), LmPerplexity(),
    Decode(), Score(), Report(), Pack())}
