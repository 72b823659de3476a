"""Distributed training of an intent model: what ``python -m tasks.train`` (the CLI) runs.

Modules, in dependency order (each imports only those before it):
    data         the training-set folder: manifest, split files, candidate rows, the validation gate
    collectives  process-group helpers (rank/world, gather, all-reduce), all single-process safe
    build        model config from the training config and a family's ``models.<name>`` section, LR schedule
    steps        one optimiser step, batched prediction, split evaluation
    state        typed state of one training process (job, encoded data, model being fitted, progress)
    tracking     MLflow: experiment, run parameters, per-epoch and test metrics, plots, registration
    worker       the body of every torchrun process: encoding, the epoch loop, checkpoints
    torchrun     one torchrun subprocess of ``tasks.train`` and its result file
    launcher     ``launch``: checks, the optional search (``tasks.search``, which uses torchrun and tracking),
                 then the registered training
"""
