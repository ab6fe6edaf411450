"""The image side: one diffusers pipeline shared by every visitor, its resident LoRAs, and a mix per request.

A request flows one way: `studio.py` validates it, then under the lock the adapter pool (peft_core/pool.py) and
the slots are consulted and changed, then `pipeline.py` calls diffusers, and the image comes back. Open:

- studio.py     ImageStudio: the public calls (load_base, base_info, load_adapter, generate, compare ...); start here.
- requests.py   ImageRequest (one generation) and PipelineInfo (the loaded base), as text/requests.py on the text side.
- families.py   one Family record per pipeline family: defaults, call arguments, ranges, dtype. A new family
                starts here.
- pipeline.py   every call into diffusers: build a pipeline, its defaults, load a LoRA into a slot and check it,
                run one request.
- slots.py      the resident adapters' weights in RAM, the few slots in the pipeline.
- fusion.py     the applied mix merged into the base weights, undone bit for bit; recent mixes' merged weights.
- compile.py    STUDIO_COMPILE=1: the denoiser compiled once per base, and why a switch does not recompile it.
- lora_files.py LoRA file layouts (peft, kohya, old diffusers ...), the checked read, AdapterInfo, trigger words.
                A new adapter file layout starts here.
- lycoris_files.py  LyCORIS files (LoHa, LoKr): the algorithm, checked per module, and the peft config.
- lora_report.py    what a LoRA file says about itself (its family, alpha, metadata) and the load report.
- peft_files.py     peft's own saves (bare, `base_model.model.`, prefixed keys) and their LoraConfig's alpha.
- diagnosis.py      the reasons a refusal gives: where a file's module names leave the base's model.
- checks.py     a pipeline repo's configs and declared sizes, checked before anything is downloaded or built.
- recipe.py     the recipe every PNG carries (a text chunk), read back and restored.
- thumbnails.py each card's picture: the model card's widget image, else one made once with the adapter alone.
- export.py     a mix written out as one LoRA file. prompts.py: trigger words.
- sweep.py      X/Y grids over adapter weights, seed, steps, guidance, a prompt search-and-replace.
"""
