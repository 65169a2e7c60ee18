"""Transcribe or translate recordings of any length (espnet_mtla.cli.transcribe; from Python: espnet_mtla.api).

    python -m espnet_mtla.bin.transcribe meeting.flac --model exp/asr_train_mtla --output_dir out
"""

from espnet_mtla.cli.transcribe import main

if __name__ == "__main__":
    main()
