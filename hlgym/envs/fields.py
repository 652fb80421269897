"""CoreFields: the settings every episode has (data, topology, inner model, reward, observation).

:class:`~hlgym.envs.PeerSelectionConfig` is these fields plus each component's
(:mod:`hlgym.envs.components`: transfer modes, faults, scenarios), the task distribution and
the device. A component's fields derive from this class, so its hooks read the core fields
with their types and nothing here knows any component.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MatrixLike = Sequence[Sequence[float]]


@dataclass(frozen=True)
class CoreFields:
    """The fields of :class:`~hlgym.envs.PeerSelectionConfig` that no component owns."""

    # --- data -------------------------------------------------------------------
    dataset: str = "digits"
    """Data set name: ``"digits"``, ``"mnist"``, ``"fashion_mnist"`` or ``"synthetic"``."""
    data_dir: str | None = None
    """Folder with the IDX files of ``mnist``/``fashion_mnist``; None searches the usual places."""
    n_peers: int = 10
    """Number of peers (the action space size); at least 2."""
    partition: str = "hl_skew"
    """How training samples are split: ``hl_skew``, ``hl_reference``, ``dirichlet``, ``shards``, ``iid``."""
    main_samples: int = 50
    """``hl_skew``/``hl_reference``: samples of the peer's main class (class ``peer % n_classes``)."""
    other_samples: int = 50
    """``hl_skew``/``hl_reference``: samples drawn from all other classes together."""
    samples_per_peer: int | None = None
    """``dirichlet``/``shards``/``iid``: pool size per peer; None splits the whole training set."""
    dirichlet_alpha: float = 0.5
    """``dirichlet``: concentration; smaller is more skewed. > 0."""
    classes_per_peer: int = 2
    """``shards``: shards (about one class each) per peer."""

    # --- topology ---------------------------------------------------------------
    topology: str | MatrixLike = "hl_random"
    """``"hl_random"`` (the reference's fixed matrix), ``"euclidean"`` (random positions,
    redrawn each episode) or an ``n_peers x n_peers`` symmetric, non-negative matrix with a
    zero diagonal [distance units]."""
    topology_scale: float = 0.1
    """Largest hop cost of the generated topologies [distance units]; the reference's is 0.1."""

    # --- inner model and local training -------------------------------------------
    model: str = "mlp"
    """Inner network: ``"cnn"`` (the reference's) or ``"mlp"``."""
    hidden_units: int = 64
    """Hidden width of the ``mlp``."""
    optimizer: str = "adam"
    """Local optimizer: ``"adam"`` or ``"sgd"``."""
    lr: float = 1e-2
    """Local learning rate."""
    adam_eps: float = 1e-7
    """Adam's epsilon; 1e-7 is Keras' default, which the reference used."""
    local_epochs: int = 1
    """Passes over the peer's data per round."""
    batch_size: int = 32
    """Local minibatch size [samples]."""
    per_peer_optimizer: bool = True
    """Each peer keeps its own optimizer state across the episode, as the reference's
    per-peer Keras models do; False shares one optimizer state that travels with the model."""

    # --- reward and episode ---------------------------------------------------------
    goal: float = 0.86
    """Target test accuracy in (0, 1]; the episode terminates when it is reached."""
    reward_base: float = 32.0
    """``base`` of the reward ``base ** (acc - goal) - cost_weight * hop_cost - 1``; > 1."""
    cost_weight: float = 1.0
    """Weight of the hop cost in the reward; >= 0."""
    eval_samples: int | None = None
    """Test images the reward's accuracy is measured on: a fixed, class-stratified subset
    (the same for every episode), or None for the whole test set. A subset of n images
    adds sampling noise of about sqrt(acc * (1 - acc) / n) to the accuracy (docs/speed.md)."""
    max_rounds: int = 36
    """Rounds per episode before truncation (the reference stops after round 36)."""
    start_peer: int = 0
    """Peer that holds the fresh model at reset."""
    first_round_at_start: bool = False
    """If True, ``reset`` already plays round 1 at ``start_peer`` (the reference forces its
    first round there whatever the policy), so the agent's first action is round 2."""

    # --- observation -----------------------------------------------------------------
    observation: str = "peer_features"
    """``"peer_features"`` (``Box(n_peers, 8)``) or ``"hl_pca"`` (``Box(n_peers * pca_components)``)."""
    pca_components: int = 10
    """``hl_pca``: components kept, 1 .. n_peers."""
    probe_size: int = 32
    """``peer_features``: samples of each peer's data the probe loss is measured on."""
