"""hlgym: Homogeneous Learning's hierarchy of neural networks as a Gymnasium environment.

``import hlgym`` registers the environment ids (see :data:`hlgym.envs.PRESETS`).
"""

from hlgym.envs.registration import register_envs

__version__ = "0.3.0"

register_envs()

__all__ = ["__version__"]
