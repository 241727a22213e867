"""The compiler's intermediate representation: what the templates see.

`beagle.compiler.lower` turns a validated `Spec` into one `ModuleIR`; the templates in
`templates/` only loop over its tuples, test its flags and paste its strings. Every
decision is made in lowering, so every string here is already valid Python built from
validated identifiers, import paths, references and `repr()`/`ascii()` of literals: a
template never sees a raw spec string.

The tree:

    ModuleIR                      one generated module
    ├── header: HeaderIR          the comment and docstring at the top
    ├── imports: tuple[ImportGroupIR, ...]
    │   └── lines: tuple[str, ...]    `import x` / `from x import y`, sorted
    ├── model: ModelIR            make_model() and the two `state.apply_fn` calls
    │   ├── train_call: ApplyIR       training mode: mutable BatchNorm, RNG streams
    │   ├── eval_call: ApplyIR        eval mode: running averages
    │   └── nnx: NnxIR | None         model.kind: nnx: graphs, merges and reseeding instead
    ├── optimizer: OptimizerIR    make_optimizer(): the expression, optionally wrapped
    ├── losses: LossesIR          compute_losses()
    │   └── terms: tuple[TermIR, ...]
    ├── metrics: tuple[TermIR, ...]   compute_metrics() (empty: no such function)
    ├── helpers: tuple[str, ...]  the helper functions (macros) the module defines
    └── step: StepIR              train_step / val_step: flags for the optional paths
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HeaderIR:
    """The module's opening comment and docstring."""

    source_name: str  # the spec's file name, printable ASCII (escaped with ascii() if not)
    spec_name: str  # the spec's validated `name`


@dataclass(frozen=True)
class ImportGroupIR:
    """One block of imports (standard library, third party, first party), in sorted order."""

    lines: tuple[str, ...]  # complete import statements


@dataclass(frozen=True)
class ApplyIR:
    """One call of `state.apply_fn`: its rendered arguments and what it returns."""

    targets: str  # what the call's value is bound to: `model_out, updates` with mutable
    #   batch_stats (the call returns both), else `model_out`
    args: tuple[str, ...]  # rendered arguments: variables dict, inputs, keywords


@dataclass(frozen=True)
class NnxIR:
    """An NNX model (`model.kind: nnx`): what `nnx_module.py.jinja` pastes in.

    The steps take plain array pytrees (`state.params`, `state.batch_stats`), merge them
    with a graph definition from `model_graphs` (`copy=True` under `value_and_grad`), and
    reseed the RNG streams from the step's key outside the differentiated function.
    """

    make_model_doc: str  # make_model's one-line docstring
    abstract_rngs: str  # `nnx.Rngs(params=0, dropout=0)`: every stream, for nnx.eval_shape
    call: str  # `model(batch["image"])`: the model applied to its inputs
    reseed: str  # nnx.reseed's keywords: `dropout=rng_key`; empty: no stream to reseed
    state_merge: str  # nnx.merge's states from the state: `state.params, ..., rng_state`
    train_merge: str  # the same inside loss_fn, with the differentiated `params`
    batch_stats: str  # the updated BatchNorm statistics as a plain pytree (train mode)


@dataclass(frozen=True)
class ModelIR:
    """The model class, how the steps call it, and how its outputs are named."""

    class_name: str  # the local name the class is imported under
    constructor: str  # `CNN(features=[16, 32], ...)`: keyword arguments as literals
    batch_norm: bool  # the state carries batch_stats
    stream_split: int  # >1: split the step key into this many stream keys; else 0
    train_call: ApplyIR  # training mode
    eval_call: ApplyIR  # eval mode
    outputs_expr: str  # builds the `outputs` dict from `model_out`
    float32_outputs: bool  # cast the outputs to float32 before losses and metrics
    #   (with `precision`: the model may compute in a lower precision)
    nnx: NnxIR | None  # model.kind: nnx; None: linen (`state.apply_fn`)


@dataclass(frozen=True)
class OptimizerIR:
    """The body of make_optimizer(): optional schedule, the chain, optional accumulation."""

    docstring: str  # one line, built from validated names and numbers
    schedule_expr: str | None  # `optax.<schedule>(...)`, bound to `schedule`; None: a number
    optimizer_expr: str  # `optax.<name>(...)`, in an `optax.chain` after clipping if asked
    wrapper: str | None  # an expression wrapping the bound `optimizer` (gradient
    #   accumulation: `optax.MultiSteps(optimizer, ...)`); None: `optimizer_expr` is returned


@dataclass(frozen=True)
class TermIR:
    """One loss term or metric: its name, its key in the metrics dict and its expression."""

    name: str  # the spec name, a validated identifier (for beagle's own messages, not code)
    key: str  # Python string literal of the spec name (repr of a validated identifier)
    expr: str  # the expression computing it from `outputs`, `batch` and `params`
    shape_checks: tuple[str, ...]  # `check_same_shape(...)` calls that run before it


@dataclass(frozen=True)
class LossesIR:
    """compute_losses(): each term, then their weighted sum."""

    terms: tuple[TermIR, ...]  # in spec order
    total_expr: str  # the weighted sum of `terms[...]`
    report_terms: bool  # several terms: each is reported as a metric too
    unpack_target: str  # what compute_losses' terms are bound to: `terms` if reported, else `_`


@dataclass(frozen=True)
class StepIR:
    """The flags of train_step and val_step."""

    signature: str  # parameters of compute_losses/compute_metrics (`params` only if used)
    train_args: str  # their arguments inside loss_fn
    val_args: str  # their arguments in val_step (`state.params` for `params`)
    has_metrics: bool  # there is a compute_metrics()
    has_aux: bool  # loss_fn returns (loss, aux); False: the loss alone
    aux_targets: str  # what the aux value unpacks into: `outputs` or `(terms, outputs)`
    aux_values: str  # what loss_fn returns as aux
    aux_type: str  # the aux value's type hint
    metrics_expr: str  # the metrics dict of both steps (train_step may add skipped_steps)
    update_call: str  # `state.apply_gradients(...)`, with the new batch_stats when kept
    nan_skip: bool  # keep the old state on a non-finite loss or gradient
    scan: bool  # steps_per_call K > 1 or auto: jitted train_one_step, and train_step scans it
    scan_length: int | None  # the fixed K of the scan; None (auto): the batches' leading axis
    scan_docstring: str  # train_step's docstring when it scans
    loss_scale: bool  # float16: dynamic loss scaling (`state.dynamic_scale`); an overflowed
    #   gradient keeps the old state and counts in `loss_scale_skips`


@dataclass(frozen=True)
class ModuleIR:
    """One generated module, fully decided."""

    header: HeaderIR
    imports: tuple[ImportGroupIR, ...]  # non-empty groups, in order
    model: ModelIR
    optimizer: OptimizerIR
    losses: LossesIR
    metrics: tuple[TermIR, ...]  # empty: no compute_metrics()
    helpers: tuple[str, ...]  # helper functions the module defines, each a macro of that
    #   name in `macros.jinja` (`catalog.HELPERS` order)
    step: StepIR
