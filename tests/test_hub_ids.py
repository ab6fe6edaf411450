"""Repo ids, revisions and weight_name resolution: refused with the reason, before any download."""

import pytest

from peft_core import hub
from peft_core.errors import HubError


@pytest.mark.parametrize(
    "repo_id, message",
    [
        ("", "must be a Hub id"),
        ("   ", "must be a Hub id"),
        ("a/b/c", "too many '/'"),
        ("org/../secret", "contains '..'"),
        ("https://huggingface.co/org/name", "looks like a URL"),
        ("x" * 1000, "1000 characters"),
        ("org/-name", "not a valid Hub id"),
        ("org/na me", "not a valid Hub id"),
        ("org--x/name", "not a valid Hub id"),
        ("org/name.git", "not a valid Hub id: .* not ending with '.git'"),  # huggingface_hub's rule
        ("café/lora", "not a valid Hub id"),
        (None, "must be a Hub id"),
    ],
)
def test_bad_repo_ids(repo_id, message):
    with pytest.raises(HubError, match=message):
        hub.check_repo_id(repo_id)


@pytest.mark.parametrize("repo_id", ["gpt2", "ybelkada/opt-350m-lora", "stabilityai/stable-diffusion-xl-base-1.0"])
def test_good_repo_ids(repo_id):
    assert hub.check_repo_id(f"  {repo_id} ") == repo_id


@pytest.mark.parametrize(
    "repo_id", ["org/x", "org/-x", "org/x-", "_org/x_", "org/a.b_c-d", "o/x.git", "org/x.gi", "é/x", "o/ x", "a" * 90]
)
def test_huggingface_hub_decides_what_a_hub_id_is(repo_id):
    """Past the checks for the usual mistakes, check_repo_id accepts exactly what validate_repo_id accepts."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
        valid = True
    except HFValidationError:
        valid = False
    if valid:
        assert hub.check_repo_id(repo_id) == repo_id
    else:
        with pytest.raises(HubError, match=f"repo id '{repo_id}' is not a valid Hub id: use 'org/name'"):
            hub.check_repo_id(repo_id)


def test_a_refusal_shows_at_most_80_characters_of_the_id():
    with pytest.raises(HubError) as caught:
        hub.check_repo_id("org/" + "x" * 88 + ".git")
    assert "org/" + "x" * 73 + "..." in str(caught.value) and "x" * 74 not in str(caught.value)


@pytest.mark.parametrize("revision", ["main", "v1.0", "refs/pr/1", "0123abcd" * 5])
def test_good_revisions(revision):
    assert hub.check_revision(revision) == revision


@pytest.mark.parametrize("revision", ["../main", "-x", "a b", 3])
def test_bad_revisions(revision):
    with pytest.raises(HubError, match="revision must be"):
        hub.check_revision(revision)


def repo(files):
    class Listed(hub.Repo):
        def list_files(self):
            return files

    return Listed("org/name", "main", None)


def test_single_safetensors_is_picked():
    assert hub.pick_weight_name(repo(["README.md", "lora.safetensors", "sub/x.safetensors"]), "") == "lora.safetensors"


def test_several_safetensors_are_listed():
    with pytest.raises(HubError, match="choose one as weight_name: a.safetensors, b.safetensors"):
        hub.pick_weight_name(repo(["a.safetensors", "b.safetensors"]), "")


@pytest.mark.parametrize("files", [["pytorch_lora_weights.bin"], ["model.ckpt", "README.md"], ["lora.pt"]])
def test_pickle_only_is_refused(files):
    with pytest.raises(HubError, match="only pickle weights .* refused because unpickling can run code"):
        hub.pick_weight_name(repo(files), "")


@pytest.mark.parametrize(
    "weight_name, message",
    [
        ("../a.safetensors", "must be a file name in the repo"),
        ("/etc/passwd", "must be a file name in the repo"),
        ("sub/a.safetensors", "must be a file name in the repo"),
        ("lora.bin", "is a pickle file"),
        ("c.safetensors", "'c.safetensors' is not in 'org/name' .*: a.safetensors"),
        ("notes.txt", "not a .safetensors file"),
    ],
)
def test_bad_weight_names(weight_name, message):
    with pytest.raises(HubError, match=message):
        hub.pick_weight_name(repo(["a.safetensors", "lora.bin"]), weight_name)


def test_no_weights_at_all():
    with pytest.raises(HubError, match="has no .safetensors file"):
        hub.pick_weight_name(repo(["README.md"]), "")


def test_local_paths_need_an_allowed_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("STUDIO_LOCAL_DIRS", raising=False)
    with pytest.raises(HubError, match="none are configured"):
        hub.open_repo(str(tmp_path))
    monkeypatch.setenv("STUDIO_LOCAL_DIRS", str(tmp_path / "allowed"))
    (tmp_path / "allowed" / "repo").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "allowed" / "link").symlink_to(tmp_path / "outside")
    assert hub.open_repo(str(tmp_path / "allowed" / "repo")).bundled
    for escape in (tmp_path / "outside", tmp_path / "allowed" / "link", tmp_path / "allowed" / ".." / "outside"):
        with pytest.raises(HubError, match="is not allowed"):
            hub.open_repo(str(escape))


def test_bundled_repos_have_only_main():
    from peft_core import bundled

    if not bundled.bundled_repos():
        pytest.skip("no bundled repos")
    repo_id = bundled.bundled_repos()[0]
    assert hub.open_repo(repo_id).local_dir is not None
    with pytest.raises(HubError, match="only revision 'main'"):
        hub.open_repo(repo_id, "v2")
