"""Auto mode (parallel_config.mode: auto), standing on the model: the device mesh, the op table of planned layouts,
its checks, its MindSpore forms, the parallel context, attaching the strategies to a built network, the full-batch
build and the reader of the Ascend dry-run compile's evidence.

May import: everything from config up to model/ and train/ (it builds a Training). Imported by job.py, ckpt/,
planning's users and the tools; never by model/, moe/, parallel/ or train/.
"""
