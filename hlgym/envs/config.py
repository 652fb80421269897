"""PeerSelectionConfig: every setting of the environment, typed and validated."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

from hlgym.envs.datasets import DATASETS
from hlgym.envs.observation import OBSERVATIONS, feature_names
from hlgym.envs.partition import PARTITIONS
from hlgym.envs.scenarios import PEER_RULES
from hlgym.envs.scenarios.domain_shift import ALIGNMENTS, DOMAIN_SHIFTS, check_level
from hlgym.envs.scenarios.modality_experts import MODALITY_SPLITS
from hlgym.envs.tasks import SPEC_KEYS, TaskSpec
from hlgym.envs.topology import TOPOLOGIES, validate_matrix
from hlgym.envs.transfer import BYZANTINE_MODES, DISTILL_ON, PER_PEER, TRANSFERS
from hlgym.models.training import MODELS, OPTIMIZERS

Matrix = tuple[tuple[float, ...], ...]
MatrixLike = Sequence[Sequence[float]]


@dataclass(frozen=True)
class PeerSelectionConfig:
    """Settings of :class:`hlgym.envs.PeerSelectionEnv`.

    Validated on construction: a bad value raises ``ValueError`` naming the field, the
    value and what is accepted. Build variants with :meth:`replace`.
    """

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

    # --- knowledge transfer (README "Transfer modes and faults") ---------------------------
    transfer: str = "relay"
    """What travels and how the receiver absorbs it: ``"relay"`` (one model travels and the
    receiver trains it, HL's method), ``"average"``, ``"distill"`` or ``"logits"`` (every
    peer keeps its own model; see :mod:`hlgym.envs.transfer`)."""
    transfer_mix: float = 0.5
    """``average``: the receiver's model becomes ``mix * arriving + (1 - mix) * own``. In [0, 1]."""
    distill_weight: float = 1.0
    """``distill``/``logits``: weight of the distillation term in the receiver's loss. >= 0."""
    distill_temperature: float = 2.0
    """``distill``/``logits``: softmax temperature T of the distillation term (scaled by T^2). > 0."""
    distill_on: str = "logits"
    """``distill``: what the receiver matches: the teacher's ``"logits"`` (KL at temperature T)
    or its penultimate ``"features"`` (mean squared error)."""
    public_samples: int = 100
    """``logits``: size of the public unlabeled set (training images no peer holds, drawn per
    episode) on which the holder's logits travel. At least 1, at most the unassigned pool."""
    track_peer_accuracy: bool = False
    """Add ``mean_peer_accuracy`` to ``info``: every peer model's test accuracy, averaged
    (costs one evaluation per peer model and round)."""

    # --- scenario and faults ------------------------------------------------------------
    offline_prob: float = 0.0
    """Chance that a peer is offline in a round (never the holder); sending the model to
    an offline peer fails: the hop is paid, nothing trains. In [0, 1)."""
    link_failure_prob: float = 0.0
    """Chance that a hop to another peer fails: the hop is paid, nothing arrives, the holder
    keeps the model (``info["delivered"]`` is False). In [0, 1)."""
    byzantine_peers: int = 0
    """Peers that corrupt what they return, drawn per episode and never observed
    (``env.unwrapped.byzantine``). In [0, n_peers - 1]."""
    byzantine_mode: str = "noise"
    """How a byzantine peer corrupts: ``"noise"`` (Gaussian noise of scale
    ``byzantine_scale`` added to the weights), ``"sign_flip"`` (returns the model moved by
    minus its local update) or ``"label_flip"`` (trains on permuted labels)."""
    byzantine_scale: float = 0.1
    """``noise``: standard deviation of the noise added to every weight. > 0."""

    # --- scenario: domain shift (hlgym.envs.scenarios.domain_shift; README "Scenarios") ------
    domain_shift: str | None = None
    """None (the images as the data set has them), or the transform whose level names a
    domain: ``"rotate"`` [degrees], ``"invert"`` [share of the negative, 0..1], ``"noise"``
    [standard deviation], ``"blur"`` [pixels of standard deviation], ``"thicken"`` [pixels]."""
    source_domains: tuple[float, ...] = (0.0, 15.0, 30.0, 45.0, 60.0)
    """``domain_shift``: the domains (levels) the peers' training images are in; distinct."""
    target_domain: float = 75.0
    """``domain_shift``: the domain of the test images the reward uses; not a source domain."""
    domain_rule: str = "cycle"
    """``domain_shift``: which source domain a peer holds: ``"cycle"`` (peer i holds
    ``source_domains[i % k]``), ``"blocks"`` (runs of neighbouring indices share one) or
    ``"random"`` (drawn per episode)."""
    target_samples: int = 64
    """``domain_shift``: unlabeled target-domain images (training images no peer holds, drawn
    per episode) that the starter holds: the observation's ``target_distance`` reads them and
    ``alignment="mmd"`` trains on them. At least 1, at most the unassigned pool."""
    alignment: str = "none"
    """``domain_shift``: ``"none"``, or ``"mmd"``: FedKA's knowledge alignment, the target
    images travel with the model (their bytes count once, on the first hop away from the
    starter) and local training adds ``alignment_weight`` times the multi-kernel MMD between
    the penultimate features of each batch and of the target images."""
    alignment_weight: float = 1.0
    """``alignment="mmd"``: weight of the MMD term in the local loss. >= 0."""

    # --- scenario: modality experts (hlgym.envs.scenarios.modality_experts; README "Scenarios") ---
    modality_split: str | None = None
    """None (one network reads whole images), or how every example is cut into views
    (modalities) of which each peer holds one: ``"columns"`` (vertical strips, left to right:
    2 are the left and the right half) or ``"rows"`` (horizontal strips, top to bottom). The
    model is then :class:`~hlgym.models.experts.ModalityExperts` (an MLP encoder per view,
    ``model="mlp"`` only), trained with the InfoNCE loss against learned class embeddings."""
    modalities: int = 2
    """``modality_split``: views per example; at least 2, at most the image's pixels across
    the split (8 for the 8x8 digits)."""
    modality_rule: str = "cycle"
    """``modality_split``: which view a peer holds: ``"cycle"`` (peer i holds view
    ``i % modalities``), ``"blocks"`` (runs of neighbouring indices share one) or
    ``"random"`` (drawn per episode)."""
    embedding_dim: int = 32
    """``modality_split``: dimension of the shared embedding space of samples and classes."""
    contrastive_temperature: float = 0.07
    """``modality_split``: temperature of the InfoNCE loss (cosine similarities divided by
    it; BiCSL's 0.07). > 0."""

    # --- task distribution (hlgym.envs.tasks; README "Meta-learning across tasks") ----------
    tasks: TaskSpec | None = None
    """None (one task: this config), or a task distribution: a dict with ``max_peers``,
    ``split`` (``"train"``, ``"held_out"`` or a family's name), ``train`` and ``held_out``
    (lists of families: a ``name`` and config fields, each a value or ``{"choice": [...]}``).
    Every reset of :class:`~hlgym.envs.TaskDistributionEnv` draws a family of the split and a
    task of it; this config's other fields are every task's defaults. Held as a
    :class:`~hlgym.envs.tasks.TaskSpec`; ``observation="peer_features"`` only."""

    # --- execution -------------------------------------------------------------------------
    device: str = "cpu"
    """Torch device of data and models, e.g. ``"cpu"`` or ``"cuda"``."""

    def __post_init__(self) -> None:
        if not isinstance(self.topology, str):
            object.__setattr__(self, "topology", _as_matrix(self.topology, self.n_peers))
        if isinstance(self.source_domains, list):  # JSON gives lists; the config holds tuples (hashable)
            object.__setattr__(self, "source_domains", tuple(self.source_domains))
        if self.tasks is not None and not isinstance(self.tasks, TaskSpec):
            object.__setattr__(self, "tasks", TaskSpec.from_dict(self.tasks))
        _validate(self)

    def replace(self, **overrides: Any) -> PeerSelectionConfig:
        """A copy with some fields changed; unknown names raise a ``TypeError`` that
        lists the accepted ones. ``tasks.<key>`` (``tasks.split``, ``tasks.max_peers``, ...)
        changes one key of a task distribution's spec."""
        nested = {k.partition(".")[2]: overrides.pop(k) for k in list(overrides) if k.startswith("tasks.")}
        if nested:
            current = overrides.get("tasks", self.tasks)
            if current is None:
                key = next(iter(nested))
                raise ValueError(
                    f"tasks.{key}={nested[key]!r} is not accepted: the config has no tasks; accepted: tasks.<key> "
                    "on a task distribution (hlgym/TaskDistribution-v0)"
                )
            spec = TaskSpec.from_dict(current).to_dict()
            for key, value in nested.items():
                if key not in SPEC_KEYS:
                    raise TypeError(f"'tasks.{key}' is not a key of tasks; accepted: {', '.join(SPEC_KEYS)}")
                spec[key] = value
            overrides["tasks"] = spec
        check_field_names(overrides)
        return dataclasses.replace(self, **overrides)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PeerSelectionConfig:
        """The config :meth:`to_dict` wrote (or any mapping of field names to values);
        unknown names raise a ``TypeError`` that lists the accepted ones."""
        check_field_names(data)
        return cls(**data)

    def to_dict(self, changed_only: bool = False) -> dict[str, Any]:
        """The settings as JSON-ready values (the matrix as nested lists); with
        ``changed_only``, only those that differ from the embedded default
        (``from_dict`` of either gives this config back)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if not isinstance(self.topology, str):
            out["topology"] = [list(row) for row in self.topology]
        out["source_domains"] = list(self.source_domains)
        out["tasks"] = None if self.tasks is None else self.tasks.to_dict()
        if changed_only:
            default = PeerSelectionConfig()
            out = {k: v for k, v in out.items() if getattr(self, k) != getattr(default, k)}
        return out


def make_config(config: PeerSelectionConfig | Mapping[str, Any] | None = None, **overrides: Any) -> PeerSelectionConfig:
    """``config`` (default: the embedded default; a mapping is read by
    :meth:`PeerSelectionConfig.from_dict`, as registered specs hold it) with ``overrides``."""
    if config is None:
        base = PeerSelectionConfig()
    elif isinstance(config, PeerSelectionConfig):
        base = config
    elif isinstance(config, Mapping):
        base = PeerSelectionConfig.from_dict(config)
    else:
        raise TypeError(
            f"config={config!r} is not accepted; accepted: a PeerSelectionConfig, a dict of its fields, or None"
        )
    return base.replace(**overrides)


def field_names() -> list[str]:
    """The public field names of :class:`PeerSelectionConfig`."""
    return [f.name for f in fields(PeerSelectionConfig)]


def check_field_names(names: Iterable[str]) -> None:
    """Raise ``TypeError`` for any name that is not a config field, with a suggestion."""
    known = field_names()
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(f"{name!r} is not a PeerSelectionConfig field{hint}; accepted: {', '.join(known)}")


def _as_matrix(value: Any, n_peers: int) -> Matrix:
    if isinstance(value, Sequence | torch.Tensor) or hasattr(value, "__array__"):
        d = validate_matrix(value, n_peers)
        return tuple(tuple(float(v) for v in row) for row in d)
    raise ValueError(
        f"topology={value!r} is not accepted; accepted: {', '.join(repr(t) for t in TOPOLOGIES)} "
        "or an n_peers x n_peers distance matrix"
    )


def _fail(name: str, value: Any, accepted: str) -> None:
    raise ValueError(f"{name}={value!r} is not accepted; accepted: {accepted}")


def _int(cfg: PeerSelectionConfig, name: str, low: int, high: int | None = None) -> None:
    value = getattr(cfg, name)
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
    if not ok:
        _fail(name, value, f"an integer >= {low}" + ("" if high is None else f" and <= {high}"))


def _real(cfg: PeerSelectionConfig, name: str, accepted: str, test: Any) -> None:
    value = getattr(cfg, name)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and test(value)
    if not ok:
        _fail(name, value, accepted)


def _choice(cfg: PeerSelectionConfig, name: str, options: Sequence[str]) -> None:
    value = getattr(cfg, name)
    if value not in options:
        _fail(name, value, ", ".join(repr(o) for o in options))


def _validate(cfg: PeerSelectionConfig) -> None:
    _choice(cfg, "dataset", DATASETS)
    if cfg.data_dir is not None and not isinstance(cfg.data_dir, str):
        _fail("data_dir", cfg.data_dir, "a folder path (str) or None")
    _int(cfg, "n_peers", 2)
    _choice(cfg, "partition", PARTITIONS)
    _int(cfg, "main_samples", 1)
    _int(cfg, "other_samples", 0)
    if cfg.samples_per_peer is not None:
        _int(cfg, "samples_per_peer", 1)
    _real(cfg, "dirichlet_alpha", "a number > 0", lambda v: v > 0)
    _int(cfg, "classes_per_peer", 1)
    if isinstance(cfg.topology, str):
        _choice(cfg, "topology", TOPOLOGIES)
    _real(cfg, "topology_scale", "a number > 0", lambda v: v > 0)
    _choice(cfg, "model", MODELS)
    _int(cfg, "hidden_units", 1)
    _choice(cfg, "optimizer", OPTIMIZERS)
    _real(cfg, "lr", "a number > 0", lambda v: v > 0)
    _real(cfg, "adam_eps", "a number > 0", lambda v: v > 0)
    _int(cfg, "local_epochs", 1)
    _int(cfg, "batch_size", 1)
    for flag in ("per_peer_optimizer", "first_round_at_start", "track_peer_accuracy"):
        if not isinstance(getattr(cfg, flag), bool):
            _fail(flag, getattr(cfg, flag), "True or False")
    _real(cfg, "goal", "a number in (0, 1]", lambda v: 0 < v <= 1)
    _real(cfg, "reward_base", "a number > 1", lambda v: v > 1)
    _real(cfg, "cost_weight", "a number >= 0", lambda v: v >= 0)
    _int(cfg, "max_rounds", 1 + int(cfg.first_round_at_start is True))
    _int(cfg, "start_peer", 0, cfg.n_peers - 1)
    _choice(cfg, "observation", OBSERVATIONS)
    if cfg.observation == "hl_pca":
        _int(cfg, "pca_components", 1, cfg.n_peers)
    _int(cfg, "probe_size", 1)
    if cfg.eval_samples is not None:
        _int(cfg, "eval_samples", 1)
    _choice(cfg, "transfer", TRANSFERS)
    _real(cfg, "transfer_mix", "a number in [0, 1]", lambda v: 0 <= v <= 1)
    _real(cfg, "distill_weight", "a number >= 0", lambda v: v >= 0)
    _real(cfg, "distill_temperature", "a number > 0", lambda v: v > 0)
    _choice(cfg, "distill_on", DISTILL_ON)
    _int(cfg, "public_samples", 1)
    if cfg.transfer in PER_PEER and cfg.per_peer_optimizer is not True:
        _fail(
            "per_peer_optimizer",
            cfg.per_peer_optimizer,
            f"True with transfer={cfg.transfer!r} (every peer's own model keeps its own optimizer state)",
        )
    _real(cfg, "offline_prob", "a number in [0, 1)", lambda v: 0 <= v < 1)
    _real(cfg, "link_failure_prob", "a number in [0, 1)", lambda v: 0 <= v < 1)
    _int(cfg, "byzantine_peers", 0, cfg.n_peers - 1)
    _choice(cfg, "byzantine_mode", BYZANTINE_MODES)
    _real(cfg, "byzantine_scale", "a number > 0", lambda v: v > 0)
    _validate_domain_shift(cfg)
    _validate_modalities(cfg)
    _validate_tasks(cfg)
    try:
        torch.device(cfg.device)
    except (RuntimeError, TypeError):
        _fail("device", cfg.device, "a torch device such as 'cpu', 'cuda' or 'cuda:0'")


def _validate_domain_shift(cfg: PeerSelectionConfig) -> None:
    shift = cfg.domain_shift
    if shift is not None:
        _choice(cfg, "domain_shift", DOMAIN_SHIFTS)
    _choice(cfg, "domain_rule", PEER_RULES)
    _int(cfg, "target_samples", 1)
    _choice(cfg, "alignment", ALIGNMENTS)
    _real(cfg, "alignment_weight", "a number >= 0", lambda v: v >= 0)
    sources = cfg.source_domains
    if not isinstance(sources, tuple) or not sources:
        _fail("source_domains", sources, "a non-empty list of domains (numbers)")
    if shift is None:
        if cfg.alignment != "none":
            _fail("alignment", cfg.alignment, "'none' without a domain_shift (there is no target domain to align to)")
        return
    for level in sources:
        why = check_level(shift, level)
        if why is not None:
            _fail("source_domains", list(sources), f"a list of domains of {shift!r}, each {why}")
    if len(set(sources)) != len(sources):
        _fail("source_domains", list(sources), "distinct domains")
    why = check_level(shift, cfg.target_domain)
    if why is not None:
        _fail("target_domain", cfg.target_domain, f"a domain of {shift!r}: {why}")
    if cfg.target_domain in sources:
        _fail(
            "target_domain",
            cfg.target_domain,
            f"a domain that is not a source (source_domains={list(sources)}): the target must be unseen",
        )


def _validate_modalities(cfg: PeerSelectionConfig) -> None:
    split = cfg.modality_split
    if split is not None:
        _choice(cfg, "modality_split", MODALITY_SPLITS)
    # The upper bound (the image's pixels across the split) is checked with the data: Episode.load_data.
    _int(cfg, "modalities", 2)
    _choice(cfg, "modality_rule", PEER_RULES)
    _int(cfg, "embedding_dim", 1)
    _real(cfg, "contrastive_temperature", "a number > 0", lambda v: v > 0)
    if split is None:
        return
    if cfg.model != "mlp":
        _fail("model", cfg.model, f"'mlp' with modality_split={split!r} (the modality experts' encoders are MLPs)")
    if cfg.domain_shift is not None:
        _fail(
            "domain_shift",
            cfg.domain_shift,
            f"None with modality_split={split!r} (one scenario at a time: domain shift or modality experts)",
        )


def _validate_tasks(cfg: PeerSelectionConfig) -> None:
    """Every task a family can draw is a valid config with at most ``max_peers`` peers and
    the same observation columns as the others."""
    spec = cfg.tasks
    if spec is None:
        return
    if cfg.observation != "peer_features":
        _fail("observation", cfg.observation, "'peer_features' with tasks (its rows are padded to max_peers)")
    columns: dict[tuple[str, ...], str] = {}
    for family in spec.train + spec.held_out:
        for name in family.fields():
            if name in ("tasks", "observation"):
                raise ValueError(f"tasks family {family.name!r}: the field {name!r} is not accepted in a family")
            check_field_names([name])
        for task in family.tasks():
            try:
                one = dataclasses.replace(cfg, tasks=None, **task)
            except ValueError as exc:
                raise ValueError(f"tasks family {family.name!r}: {exc}") from exc
            if one.n_peers > spec.max_peers:
                raise ValueError(
                    f"tasks family {family.name!r}: n_peers={one.n_peers} is not accepted; accepted: at most "
                    f"tasks.max_peers={spec.max_peers}"
                )
            names = feature_names(one.domain_shift is not None, one.modality_split is not None)
            columns.setdefault(names, family.name)
    if len(columns) > 1:
        (a, fa), (b, fb) = list(columns.items())[:2]
        raise ValueError(
            f"tasks: family {fa!r} observes {', '.join(a)} but {fb!r} observes {', '.join(b)}; accepted: families "
            "whose tasks have the same observation columns (a domain shift or a modality split in all or none)"
        )


def parse_pairs(pairs: Sequence[str], option: str = "--env-kwargs") -> dict[str, Any]:
    """Turn ``["goal=0.7", "model=cnn"]`` into a dict of typed values.

    Values are read as JSON where they parse (numbers, ``true``, ``null``, lists), else
    as strings (``True``/``False``/``None`` as Python spells them).

    Raises:
        ValueError: If an item has no ``=`` (the message names ``option``).
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{option} item {pair!r} is not accepted; accepted: key=value")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = {"True": True, "False": False, "None": None}.get(raw, raw)
        out[key] = value
    return out


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """Turn ``["goal=0.7", "model=cnn"]`` into typed overrides of the config
    (:func:`parse_pairs`); the config's validation then checks the values.

    Raises:
        ValueError: If an item has no ``=``.
        TypeError: If a key is not a config field.
    """
    out = parse_pairs(pairs)
    check_field_names(k for k in out if not k.startswith("tasks."))  # tasks.<key>: checked by replace
    return out
