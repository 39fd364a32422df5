"""Every error rung raises on purpose, as one tree.

A caller catches the class that matches the decision it has to make; the
message is written for the person who reads it (what happened, where, and
what to do), because the CLI prints it as one line. An error about one
field of a request (a body's key, a query parameter, a header) names it in
``field``, given where it is raised, never recovered from the message.

Over HTTP (and later gRPC) each class has one status, decided in one table:
:mod:`rung.serving.responses`.

::

    RungError                       base: the CLI prints the message, exits 1
    ├── ConfigError                 rung.yaml, a routing table or a value given is invalid; ``field`` names the key
    ├── MissingDependency           an optional library is not installed; names the rung[extra]
    ├── ProjectNotFound             no rung.yaml in this directory or above
    ├── ProjectExists               rung init over an existing project
    ├── StoreError                  the metadata store cannot be opened or used
    │   ├── StoreUnavailable        its database went away: the file cannot be opened, the server refused
    │   └── StoreConflict           a write collided with a record that exists (same key, a constraint)
    ├── TrackingError               MLflow cannot be reached or refused a call
    ├── DataError                   a data source is missing or unreadable
    │   └── DataValidationError     a batch failed its schema or quality checks
    ├── PipelineError               the pipeline definition is wrong (cycle, ...)
    │   ├── StepFailed              a step raised; names the step and its log
    │   └── RunAbandoned            the process running a run died; its steps must not take effect
    ├── NotFound                    something named by the user does not exist
    │   ├── RunNotFound
    │   └── ModelVersionNotFound
    ├── ReproductionMismatch        `rung reproduce` found different metrics
    ├── IntegrityError              model files do not match their recorded sha256
    ├── ArtifactCorrupted           a cached step output no longer matches its content hash
    ├── ArtifactUnavailable         the artifact store's remote (artifacts.uri) is out of reach
    ├── RequestInvalid              an HTTP request that cannot be read as sent (400); ``field`` names the part
    │   ├── InputError              its input does not fit the model signature or the call's body (422)
    │   ├── BodyTooLarge            its body is over serve.max_body_mb (413)
    │   └── UnsupportedMediaType    its body is not JSON (415)
    ├── ServingUnavailable          the gateway cannot answer this now, not the request's fault (503)
    │   ├── NotServed               a routed model or version could not be loaded (its sha256, not registered)
    │   └── WorkerDied              a model's worker process died while predicting; retry
    ├── PredictionFailed            the model raised on this input (500, that request only)
    ├── CertificationError          `rung certify` could not run its checks (exit 2)
    ├── AdoptionRefused             `rung adopt` cannot take an MLflow version as asked (its name, no signature, adopted already)
    ├── AuthError                   a missing, unknown or revoked API token (401)
    │   └── PermissionDenied        a valid token whose role is too low for the call (403)
    ├── StaleRoute                  a routing table changed under a writer
    ├── DeployRefused               a deploy, rollback or approval that cannot happen as asked
    ├── StaleDeployment             a rollout changed under a writer
    ├── LeaseLost                   a controller's lease expired or was taken over: its write is refused
    ├── DriftError                  a drift comparison cannot run (no reference, nothing in common)
    ├── LoopNotClosed               `rung demo` ended without a retrained version promoted; says where it stopped
    └── AssessError                 `rung assess` cannot read its target or its answers
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = [
    "RungError",
    "ConfigError",
    "MissingDependency",
    "ProjectNotFound",
    "ProjectExists",
    "StoreError",
    "StoreUnavailable",
    "StoreConflict",
    "TrackingError",
    "DataError",
    "DataValidationError",
    "PipelineError",
    "StepFailed",
    "RunAbandoned",
    "NotFound",
    "RunNotFound",
    "ModelVersionNotFound",
    "ReproductionMismatch",
    "IntegrityError",
    "ArtifactCorrupted",
    "ArtifactUnavailable",
    "RequestInvalid",
    "InputError",
    "BodyTooLarge",
    "UnsupportedMediaType",
    "ServingUnavailable",
    "NotServed",
    "WorkerDied",
    "PredictionFailed",
    "CertificationError",
    "AdoptionRefused",
    "AuthError",
    "PermissionDenied",
    "StaleRoute",
    "DeployRefused",
    "StaleDeployment",
    "LeaseLost",
    "DriftError",
    "LoopNotClosed",
    "AssessError",
]


class RungError(Exception):
    """Base class: an error a user can act on. ``exit_code`` is the CLI's; ``field`` the request field at fault, if any."""

    exit_code = 1
    field: str | None = None

    def __init__(self, *args: object, field: str | None = None) -> None:
        super().__init__(*args)
        if field is not None:
            self.field = field


class ConfigError(RungError):
    """The project file is missing, not YAML, or has an invalid key; or a value given (a routing table, feedback) is invalid.

    ``field`` names the key at fault when the raiser knows it (``variants[1].weight``).
    """


class MissingDependency(RungError):
    """A feature needs an optional library that is not installed; the message names the extra to install."""

    def __init__(self, module: str, *, extra: str, package: str, purpose: str) -> None:
        super().__init__(f"{purpose} needs {package}, which is not installed: pip install 'rung[{extra}]'")
        self.module = module
        self.extra = extra


class ProjectNotFound(RungError):
    """No ``rung.yaml`` was found in the directory or any parent."""


class ProjectExists(RungError):
    """``rung init`` refuses to overwrite an existing project."""


class StoreError(RungError):
    """The metadata store could not be opened, migrated or written."""


class StoreUnavailable(StoreError):
    """The metadata store's database is out of reach (file unreadable, server down or dropped): not the request's fault."""


class StoreConflict(StoreError):
    """A write to the metadata store collided with an existing record (a unique key or another constraint)."""


class TrackingError(RungError):
    """MLflow (tracking or registry) could not be reached or refused a call."""


class DataError(RungError):
    """A data source is missing, unreadable or empty."""


class DataValidationError(DataError):
    """A data batch failed validation; ``report`` holds every failing check."""

    def __init__(self, message: str, report: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.report = report or {}


class PipelineError(RungError):
    """The pipeline definition is wrong: a cycle, a missing input, a duplicate output."""


class StepFailed(PipelineError):
    """A step raised; the run failed there and nothing downstream ran."""

    def __init__(self, step: str, error: str, log_path: Path | str | None = None) -> None:
        where = f" (log: {log_path})" if log_path else ""
        super().__init__(f"step '{step}' failed: {error}{where}")
        self.step = step
        self.error = error
        self.log_path = str(log_path) if log_path else None


class RunAbandoned(PipelineError):
    """The process that ran a pipeline run died (or the run was ended); a step of it must not register."""


class NotFound(RungError):
    """Something the user named does not exist."""


class RunNotFound(NotFound):
    """No pipeline run with that id."""


class ModelVersionNotFound(NotFound):
    """No registered model version with that name and number."""


class ReproductionMismatch(RungError):
    """A reproduction produced metrics outside the tolerance of the original."""


class IntegrityError(RungError):
    """Model files differ from the sha256 digests recorded at registration: never load them."""


class ArtifactCorrupted(RungError):
    """A stored step output no longer matches its content hash (changed or removed on disk): never load it."""


class ArtifactUnavailable(RungError):
    """The artifact store's remote (``artifacts.uri``) cannot be reached: nothing is wrong with the object; try again."""


class RequestInvalid(RungError):
    """An HTTP request that cannot be read as sent: an empty or non-JSON body, a query parameter that is not a number.

    ``field`` names the part at fault (``body``, ``last``); the subclasses
    are the more precise refusals.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message, field=field)


class InputError(RequestInvalid):
    """A request's input does not fit the model signature, or a call's body its fields; ``field`` names the culprit."""


class BodyTooLarge(RequestInvalid):
    """A request body over the gateway's limit (``serve.max_body_mb``)."""


class UnsupportedMediaType(RequestInvalid):
    """A request body in a content type the gateway does not read (it reads JSON)."""


class ServingUnavailable(RungError):
    """The gateway cannot answer this request now, through no fault of the request: retry, or fix what is served."""


class NotServed(ServingUnavailable):
    """A model or version its routing table names could not be loaded here (files failing their sha256, not registered)."""


class WorkerDied(ServingUnavailable):
    """A model's worker process ended while predicting (killed, out of memory, a crash in native code); a new one starts."""


class PredictionFailed(RungError):
    """The model raised on a request's input: that request fails (500), the gateway serves on."""


class CertificationError(RungError):
    """A certification could not be carried out (not: a version failed it); the CLI exits 2.

    A CI job or a deployment controller tells "this version is not good
    enough" (exit 1) from "the gate itself is broken" (exit 2): an unknown
    version, an unreachable MLflow, a missing data snapshot, a bad
    ``certify:`` setting.
    """

    exit_code = 2


class AdoptionRefused(RungError):
    """A version registered with MLflow's own API cannot be adopted as asked; nothing was registered.

    Its name is not the project's model, it has neither signature nor input
    example, rung holds it already, or its reference data does not fit it.
    """


class AuthError(RungError):
    """An API token is missing, unknown or revoked (``status`` 401); :class:`PermissionDenied` when its role is too low."""

    status = 401


class PermissionDenied(AuthError):
    """A valid API token whose role is lower than the call needs (``status`` 403)."""

    status = 403


class StaleRoute(RungError):
    """A routing table changed between reading and writing it; read it again."""


class DeployRefused(RungError):
    """A deploy, rollback or approval that cannot happen as asked (uncertified, nothing to roll back, ...)."""


class StaleDeployment(RungError):
    """A rollout changed since it was read (another controller or a user moved it); read it again."""


class LeaseLost(RungError):
    """A write on behalf of a lease (the controller's) whose holder no longer holds it: refused, nothing changed.

    The holder stops its pass; the next pass reads the state again (and
    takes the lease again if it is free).
    """


class DriftError(RungError):
    """A drift comparison cannot run: no reference, no current rows, nothing in common, an unreadable file."""


class LoopNotClosed(RungError):
    """``rung demo`` played its days but no retrained version was triggered, certified, rolled out and promoted."""


class AssessError(RungError):
    """An assessment cannot run: the path is not a repository, or the answers file is malformed."""
