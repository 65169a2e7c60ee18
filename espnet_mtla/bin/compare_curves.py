"""Learning curves of several experiments on one axis, and as a table (espnet_mtla.cli.compare_curves).

    python -m espnet_mtla.bin.compare_curves exp/mt_train_mha exp/mt_train_mtla --metric acc --figure curves.png
"""

from espnet_mtla.cli.compare_curves import main

if __name__ == "__main__":
    main()
