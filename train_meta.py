"""Train a meta-policy and evaluate it against the baselines: ``hlgym-train`` from a checkout.

    python train_meta.py --help

The logic lives in :mod:`hlgym.train`; this file keeps the command at the top of the
repository, where the README's first command runs it.
"""

from hlgym.cli import train

if __name__ == "__main__":
    train()
