"""posenc.paths: the one root (POSENC_ROOT, explicit, walking up, bundled copy), the result and cache folders,
and the one strict YAML reader (duplicate keys, tags, alias bombs, size limit, encoding, YAML 1.2 booleans)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from posenc import paths

ROOT = Path(__file__).resolve().parents[1]

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (paths.ROOT_ENV, paths.CACHE_ENV, paths.RESULTS_ENV):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# ---------------------------------------------------------------------------------------------- the root
def test_explicit_root_and_a_folder_that_is_not_one(repo: Path, tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    assert paths.find_root(repo) == repo.resolve()
    assert paths.find_root(str(repo)) == repo.resolve()
    with pytest.raises(paths.RootError, match=rf"^{tmp_path.resolve()}: not a posenc repository \(no "
                                              r"taxonomy/categories.yaml\)$"):
        paths.find_root(tmp_path)


def test_posenc_root_is_honoured_and_a_wrong_one_named(repo: Path, tmp_path: Path,
                                                       clean_env: pytest.MonkeyPatch) -> None:
    clean_env.chdir(tmp_path)
    clean_env.setenv(paths.ROOT_ENV, str(repo))
    assert paths.find_root() == repo.resolve()
    clean_env.setenv(paths.ROOT_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(paths.RootError, match=r"^POSENC_ROOT=.*nowhere: not a posenc repository"):
        paths.find_root()
    assert paths.find_root(repo) == repo.resolve()  # an explicit root wins over the environment


def test_walks_up_from_the_working_directory(repo: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.chdir(repo / "taxonomy" / "methods")
    assert paths.find_root() == repo.resolve()


def test_bundled_copy_is_the_last_resort(repo: Path, tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """An installed wheel, run outside any checkout, finds the cards bundled inside the package."""
    clean_env.chdir(tmp_path)
    package = tmp_path / "site-packages" / "posenc"
    package.mkdir(parents=True)
    clean_env.setattr(paths, "_PACKAGE", package)
    clean_env.setattr(paths, "_BUNDLE", package / "_bundle")
    with pytest.raises(paths.RootError, match="cannot find taxonomy/categories.yaml"):
        paths.find_root()
    shutil.copytree(repo, package / "_bundle")
    assert paths.find_root() == package / "_bundle"
    assert not paths.is_checkout(package / "_bundle")


def test_relative(repo: Path, tmp_path: Path) -> None:
    root = repo.resolve()
    assert paths.relative(repo / "taxonomy" / "methods" / "alibi.yaml", root) == "taxonomy/methods/alibi.yaml"
    outside = tmp_path / "elsewhere.yaml"
    assert paths.relative(outside, root) == outside.as_posix()


# ---------------------------------------------------------------------------------------------- folders
def test_results_and_cache_folders(repo: Path, tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    (repo / "pyproject.toml").write_text("[project]\nname = 'posenc'\n")  # a checkout
    clean_env.setenv(paths.ROOT_ENV, str(repo))
    assert paths.results_dir() == repo.resolve() / "results"
    assert paths.results_dir(tmp_path / "r") == tmp_path / "r"
    assert paths.cache_dir() == repo.resolve() / ".cache" / "posenc"
    clean_env.setenv(paths.RESULTS_ENV, str(tmp_path / "res"))
    clean_env.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    assert paths.results_dir() == tmp_path / "res"
    assert paths.results_dir(tmp_path / "r") == tmp_path / "r"  # an explicit folder wins
    assert paths.cache_dir() == tmp_path / "cache"
    assert paths.checkpoint_dir() == tmp_path / "cache" / "checkpoints"
    assert paths.data_dir() == tmp_path / "cache" / "data"


def test_folders_outside_a_checkout(repo: Path, tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """The bundled copy of a wheel is read-only: results go to the working directory, the cache to ~/.cache."""
    clean_env.setenv(paths.ROOT_ENV, str(repo))  # no pyproject.toml: not a checkout
    clean_env.chdir(tmp_path)
    clean_env.setenv("HOME", str(tmp_path / "home"))
    assert paths.results_dir() == tmp_path / "results"
    assert paths.cache_dir() == tmp_path / "home" / ".cache" / "posenc"


# ---------------------------------------------------------------------------------------------- YAML
def write(tmp_path: Path, text: str | bytes, name: str = "x.yaml") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


def test_plain_yaml_and_yaml_12_booleans(tmp_path: Path) -> None:
    p = write(tmp_path, "a: 1\nb: [x, 2.5]\nc: true\nd: no\ne: off\nf: False\ng: .nan\n")
    data = paths.read_yaml(p)
    assert {k: data[k] for k in "abcdef"} == {"a": 1, "b": ["x", 2.5], "c": True, "d": "no", "e": "off", "f": False}
    assert data["g"] != data["g"]  # NaN is parsed; the card schema rejects it where a number must be finite


def test_duplicate_keys_name_file_and_line(repo: Path) -> None:
    p = repo / "taxonomy" / "methods" / "dup.yaml"
    shutil.copy(FIXTURES / "bad" / "duplicate_key.yaml", p)
    with pytest.raises(paths.YAMLReadError) as err:
        paths.read_yaml(p, repo)
    e = err.value
    assert (e.file, e.line) == ("taxonomy/methods/dup.yaml", 3)
    assert str(e) == ("taxonomy/methods/dup.yaml:3: YAML error: found duplicate key 'name' "
                      "(while constructing a mapping on line 1)")


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.mkdir [executed_marker]",
                                 "!!python/name:os.system", "!custom x"])
def test_tags_are_errors_never_executed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tag: str) -> None:
    monkeypatch.chdir(tmp_path)
    p = write(tmp_path, f"id: x\nname: {tag}\n")
    with pytest.raises(paths.YAMLReadError, match=r"x.yaml:2: YAML error: could not determine a constructor"):
        paths.read_yaml(p)
    assert not (tmp_path / "executed_marker").exists()


def test_python_tag_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(paths.YAMLReadError, match=r"\(tags are not allowed: cards are plain YAML\)$"):
        paths.read_yaml(FIXTURES / "bad" / "python_tag.yaml")
    assert not (tmp_path / "executed_marker").exists()


def test_alias_bomb_is_refused_before_it_is_built(tmp_path: Path) -> None:
    """Nine levels of nine aliases would expand to 9**9 (387 million) strings."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    p = write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(paths.YAMLReadError, match=r"x.yaml: YAML error: the document expands to more than "
                                                  r"100,000 nodes through its aliases \(refused\)"):
        paths.read_yaml(p)


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    with pytest.raises(paths.YAMLReadError, match="expands to more than"):
        paths.read_yaml(write(tmp_path, "a: &a [x, *a]\n"))


def test_modest_aliases_are_fine(tmp_path: Path) -> None:
    data = paths.read_yaml(write(tmp_path, "base: &b {x: 1}\nuse: *b\nmerged: {<<: *b, y: 2}\n"))
    assert data["use"] == {"x": 1} and data["merged"] == {"x": 1, "y": 2}


def test_oversized_file_is_refused_without_being_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "big.yaml"
    with p.open("wb") as f:
        f.truncate(paths.MAX_YAML_BYTES + 1)  # sparse: the size is known from stat alone

    def no_reading(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("the file was read")

    monkeypatch.setattr(Path, "read_bytes", no_reading)
    monkeypatch.setattr(Path, "read_text", no_reading)
    monkeypatch.setattr(Path, "open", no_reading)
    with pytest.raises(paths.YAMLReadError) as err:
        paths.read_yaml(p)
    assert str(err.value) == (f"{p.as_posix()}: file is {paths.MAX_YAML_BYTES + 1:,} bytes, over the "
                              f"{paths.MAX_YAML_BYTES:,}-byte limit for YAML files")


def test_a_file_at_the_limit_is_read(tmp_path: Path) -> None:
    body = "a: 1\n"
    p = write(tmp_path, body + "#" * (paths.MAX_YAML_BYTES - len(body)))
    assert p.stat().st_size == paths.MAX_YAML_BYTES and paths.read_yaml(p) == {"a": 1}


def test_non_utf8_and_missing_files(tmp_path: Path) -> None:
    p = write(tmp_path, b"name: caf\xe9\n")
    with pytest.raises(paths.YAMLReadError, match=r"x.yaml: not UTF-8 text \(invalid continuation byte at byte 9\)"):
        paths.read_yaml(p)
    with pytest.raises(paths.YAMLReadError, match=r"missing.yaml: cannot read: No such file or directory"):
        paths.read_yaml(tmp_path / "missing.yaml")


def test_parse_yaml_names_its_source_and_dump_round_trips() -> None:
    with pytest.raises(paths.YAMLReadError,
                       match=r"^card text:2: YAML error: did not find .* \(while parsing a flow sequence on line 1\)"):
        paths.parse_yaml("a: [1, 2\n", "card text")
    assert paths.parse_yaml("") is None
    data = {"id": "alibi", "x": [1, 2.5, None, True], "name": "Ünïcode"}
    assert paths.parse_yaml(paths.dump_yaml(data, sort_keys=False, allow_unicode=True)) == data


@pytest.mark.parametrize("text", ['{"a": &x [1, 2], "b":*x}', "a: &x [1]\nb: [*x,*x]\n", "a: &x 1\nb:\n- *x\n",
                                  "a: &x {k: 1}\nb:\n  <<: *x\n", "? &x a\n: 1\n? b\n:\n  *x\n"])
def test_every_alias_position_is_seen(text: str) -> None:
    """The fast path that skips the expansion count for alias-free text never misses an alias."""
    assert paths._may_have_aliases(text)
    paths.parse_yaml(text)


def test_alias_free_text_skips_the_count_only_when_short() -> None:
    assert not paths._may_have_aliases("formula: q_i k_j^* + a*b\nlist: [1, 2]\n")
    assert paths._may_have_aliases("[" + "1," * paths.MAX_YAML_NODES + "1]")
    with pytest.raises(paths.YAMLReadError, match="expands to more than"):
        paths.parse_yaml("[" + "1," * paths.MAX_YAML_NODES + "1]")  # the limit holds without aliases too


def test_git_commit_of_the_checkout_and_of_a_folder_outside_git(tmp_path: Path) -> None:
    full = paths.git_commit(ROOT)
    assert full is not None and re.fullmatch(r"[0-9a-f]{40}", full)
    assert paths.git_commit(ROOT, short=True) == full[:12]
    assert paths.git_commit(tmp_path) is None  # a copied tree or an installed package records no commit
