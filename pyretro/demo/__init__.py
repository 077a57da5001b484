"""``pyretro demo``: the whole Retro / InstructRetro pipeline on the synthetic-knowledge corpus (docs/demo.md).

    from pyretro.demo import make_config, run_demo
    metrics = run_demo(make_config("tiny", seed=1), "pyretro-demo")
"""

from pyretro.demo.config import SIZES, DemoConfig, make_config
from pyretro.demo.pipeline import run_demo

__all__ = ["SIZES", "DemoConfig", "make_config", "run_demo"]
