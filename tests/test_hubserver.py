"""The olah test Hub (tests/hubserver.py) behaves like the Hub for huggingface_hub, transformers, diffusers and peft.

The libraries are imported before any endpoint is set, as in the app, so these tests also prove that
`use_endpoint` redirects already-imported code. The error tests pin olah 0.5.4's answers (see the hubserver
docstring): error mapping in the app must expect them.
"""

import hashlib
import random
from pathlib import Path

import huggingface_hub
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, DiffusionPipeline, UNet2DModel
from diffusers.loaders import lora_base as diffusers_lora_base  # holds an import-time copy of HF_HUB_OFFLINE
from diffusers.utils import constants as diffusers_constants  # holds its own copy of HF_ENDPOINT
from huggingface_hub import HfApi, RepoFile, constants, hf_hub_download, list_repo_files, snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError, RepositoryNotFoundError
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from tests.hubserver import HubServer, running_hub, use_endpoint

pytestmark = pytest.mark.hub

BIG = random.Random(0).randbytes(3 * 1024 * 1024 + 17)  # a few MB, not a multiple of any chunk size
FILES = {
    "x.safetensors": b"main weights",
    "big.bin": BIG,
    "model_index.json": b"{}",
    "unet/config.json": b'{"unet": 1}',
    "unet/sub/deep.txt": b"deep",
    "README.md": "---\nlicense: mit\n---\n# test repo\n",
}
V2 = {"x.safetensors": b"v2 weights", "unet/config.json": b'{"unet": 2}'}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory):
    # Module-scoped on purpose: a session-scoped twin of a conftest's `hub_server` would keep the endpoint
    # patched for later modules.
    with running_hub(tmp_path_factory.mktemp("hubtest")) as server:
        server.add_repo("org/plain", FILES, revisions={"v2": V2})
        yield server


def read(path: str) -> bytes:
    return Path(path).read_bytes()


def test_endpoint_is_patched_in_already_imported_modules(hub: HubServer):
    assert constants.ENDPOINT == hub.endpoint
    assert huggingface_hub.hf_api.api.endpoint == hub.endpoint  # the HfApi behind list_repo_files & co.
    assert diffusers_constants.HUGGINGFACE_CO_RESOLVE_ENDPOINT == hub.endpoint
    assert Path(constants.HF_HUB_CACHE).is_relative_to(Path(constants.HF_HOME))


def test_list_repo_files_per_revision(hub: HubServer):
    assert sorted(list_repo_files("org/plain", revision="main")) == sorted(FILES)
    assert sorted(list_repo_files("org/plain", revision="v2")) == sorted(V2)


def test_download_main_branch_and_sha(hub: HubServer):
    assert read(hf_hub_download("org/plain", "x.safetensors", revision="main")) == b"main weights"
    assert read(hf_hub_download("org/plain", "x.safetensors", revision="v2")) == b"v2 weights"
    v2_sha = hub.shas["org/plain"]["v2"]
    assert read(hf_hub_download("org/plain", "unet/config.json", revision=v2_sha)) == b'{"unet": 2}'


def test_binary_of_a_few_mb_is_intact(hub: HubServer):
    data = read(hf_hub_download("org/plain", "big.bin", revision="main"))
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(BIG).hexdigest()


def test_snapshot_download_nested_tree(hub: HubServer):
    sha = hub.add_repo("org/nested", {**FILES, "text_encoder/config.json": b"{}"})  # fresh: nothing cached yet
    folder = Path(snapshot_download("org/nested", revision="main", allow_patterns=["unet/*", "*.json"]))
    got = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert got == ["model_index.json", "text_encoder/config.json", "unet/config.json", "unet/sub/deep.txt"]
    assert read(str(folder / "unet" / "sub" / "deep.txt")) == b"deep"
    assert folder.name == sha  # snapshots are keyed by commit, as with the Hub


def test_model_info(hub: HubServer):
    info = HfApi().model_info("org/plain", revision="main")
    assert info.sha == hub.shas["org/plain"]["main"]
    assert sorted(s.rfilename for s in info.siblings) == sorted(FILES)
    # olah ignores files_metadata: no sizes in siblings. The tree and paths-info APIs have them.
    detailed = HfApi().model_info("org/plain", revision="main", files_metadata=True)
    assert all(s.size is None for s in detailed.siblings)
    sizes = {f.path: f.size for f in HfApi().get_paths_info("org/plain", ["big.bin", "x.safetensors"], revision="v2")}
    assert sizes == {"x.safetensors": len(V2["x.safetensors"])}
    tree = HfApi().list_repo_tree("org/plain", revision="main", recursive=True)
    assert {f.path: f.size for f in tree if isinstance(f, RepoFile)}["big.bin"] == len(BIG)
    # No revision: answered with main thanks to HubServer's seeded metadata (olah alone answers 401).
    assert HfApi().model_info("org/plain").sha == hub.shas["org/plain"]["main"]
    assert HfApi().repo_exists("org/plain") and not HfApi().repo_exists("org/missing")


def test_errors(hub: HubServer):
    main_sha = hub.shas["org/plain"]["main"]
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/missing", "x.safetensors", revision="main")
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("org/missing", revision="main")
    # olah quirk: a missing file or revision is answered 401 RepoNotFound, not EntryNotFound/RevisionNotFound ...
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/plain", "missing.bin", revision="main")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/plain", "x.safetensors", revision="no-such-branch")
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("org/plain", revision="no-such-branch")
    # ... except a missing file at a full commit sha, which is a proper 404 EntryNotFound.
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download("org/plain", "missing.bin", revision=main_sha)
    # (Not tested: a full sha olah's git repo lacks makes it fail with 500, which huggingface_hub retries for ~23 s.)


def test_repo_can_be_replaced_while_serving(hub: HubServer):
    first = hub.add_repo("org/replaced", {"a.txt": b"one"})
    assert read(hf_hub_download("org/replaced", "a.txt", revision="main")) == b"one"
    second = hub.add_repo("org/replaced", {"a.txt": b"two"})
    assert second != first
    assert read(hf_hub_download("org/replaced", "a.txt", revision="main")) == b"two"
    assert read(hf_hub_download("org/replaced", "a.txt", revision=first)) == b"one"  # history is kept


def test_cache_after_server_stops(tmp_path: Path):
    with running_hub(tmp_path) as server:
        sha = server.add_repo("org/cached", {"w.safetensors": b"cached", "unet/config.json": b"{}", "other": b"o"})
        assert read(hf_hub_download("org/cached", "w.safetensors", revision="main")) == b"cached"
        snapshot_download("org/cached", revision="main", allow_patterns=["unet/*"])
        server.stop()
        # Connection refused on the metadata call falls back to the cache at once, for a sha or a branch.
        assert read(hf_hub_download("org/cached", "w.safetensors", revision=sha)) == b"cached"
        assert read(hf_hub_download("org/cached", "w.safetensors", revision="main")) == b"cached"
        assert (
            read(hf_hub_download("org/cached", "w.safetensors", revision="main", local_files_only=True)) == b"cached"
        )
        with use_endpoint(server.endpoint, tmp_path / "hf_home", offline=True):
            assert constants.is_offline_mode()
            assert diffusers_lora_base.HF_HUB_OFFLINE is True  # an import-time copy, patched too
            assert read(hf_hub_download("org/cached", "w.safetensors", revision="main")) == b"cached"
            assert Path(snapshot_download("org/cached", revision="main", allow_patterns=["unet/*"])).name == sha
            # Not cached: fails at once offline. (Online, a dead server costs ~23 s of retries first.)
            with pytest.raises(LocalEntryNotFoundError):
                hf_hub_download("org/cached", "other", revision="main")
        assert not constants.is_offline_mode()
        assert diffusers_lora_base.HF_HUB_OFFLINE is False


def test_use_endpoint_restores_everything(tmp_path: Path):
    before = (constants.ENDPOINT, constants.HF_HUB_CACHE, huggingface_hub.hf_api.api.endpoint)
    with use_endpoint("http://127.0.0.1:9", tmp_path):
        assert huggingface_hub.hf_api.api.endpoint == "http://127.0.0.1:9"
        inner_api = HfApi()
    assert (constants.ENDPOINT, constants.HF_HUB_CACHE, huggingface_hub.hf_api.api.endpoint) == before
    assert inner_api.endpoint == "http://127.0.0.1:9"  # plain objects made inside keep what they were given


def _tiny_llama() -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    return LlamaForCausalLM(config)


def test_transformers_and_peft_load_from_hub(hub: HubServer, tmp_path: Path):
    torch.manual_seed(0)
    base = _tiny_llama()
    base.save_pretrained(tmp_path / "llm", safe_serialization=True)
    hub.add_repo("org/llm", tmp_path / "llm")
    adapters = {}
    for name, seed in (("main", 1), ("v2", 2)):
        torch.manual_seed(seed)
        peft_model = get_peft_model(_tiny_llama(), LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
        peft_model.save_pretrained(tmp_path / name)
        adapters[name] = peft_model.base_model.model.model.layers[0].self_attn.q_proj.lora_B["default"].weight
    hub.add_repo("org/adapter", tmp_path / "main", revisions={"v2": tmp_path / "v2"})

    model = AutoModelForCausalLM.from_pretrained("org/llm", revision="main")
    torch.testing.assert_close(model.lm_head.weight, base.lm_head.weight)

    loaded = PeftModel.from_pretrained(model, "org/adapter", revision="v2")
    torch.testing.assert_close(
        loaded.base_model.model.model.layers[0].self_attn.q_proj.lora_B["default"].weight, adapters["v2"]
    )

    # transformers 5: the revision goes in adapter_kwargs (load_adapter(..., revision=) raises TypeError).
    other = AutoModelForCausalLM.from_pretrained("org/llm", revision="main")
    other.load_adapter("org/adapter", adapter_name="a", adapter_kwargs={"revision": "main"})
    torch.testing.assert_close(other.model.layers[0].self_attn.q_proj.lora_B["a"].weight, adapters["main"])

    with pytest.raises(OSError) as error:  # transformers wraps huggingface_hub's error in a plain OSError
        AutoModelForCausalLM.from_pretrained("org/missing", revision="main")
    assert isinstance(error.value.__cause__, RepositoryNotFoundError)
    with pytest.raises(ValueError, match="adapter_config.json"):  # peft swallows the hub error
        PeftModel.from_pretrained(_tiny_llama(), "org/missing", revision="main")


def test_diffusers_pipeline_from_hub(hub: HubServer, tmp_path: Path):
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8,
        block_out_channels=(4, 8),
        layers_per_block=1,
        norm_num_groups=2,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=10)).save_pretrained(tmp_path / "pipe")
    sha = hub.add_repo("org/pipe", tmp_path / "pipe")

    folder = Path(DiffusionPipeline.download("org/pipe", revision="main"))
    assert folder.name == sha and (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    pipe = DiffusionPipeline.from_pretrained("org/pipe", revision="main")
    assert isinstance(pipe, DDPMPipeline)
    torch.testing.assert_close(pipe.unet.conv_in.weight, unet.conv_in.weight)

    with pytest.raises(OSError) as error:
        DiffusionPipeline.from_pretrained("org/missing", revision="main")
    assert isinstance(error.value.__cause__, RepositoryNotFoundError)
