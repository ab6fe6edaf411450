"""The image side: one diffusers pipeline shared by every visitor, its resident LoRAs, and a mix per request.

A request flows one way: `studio.py` validates it, then under the lock the adapter pool (peft_core/pool.py) and
the slots are consulted and changed, then `pipeline.py` calls diffusers, and the image comes back. Open:

- studio.py     ImageStudio and ImageRequest: the public calls (load_pipeline, load_adapter, generate ...); start here.
- pipeline.py   every call into diffusers: build a pipeline, its defaults, load a LoRA into a slot and check it,
                run one request. A new pipeline family starts here.
- slots.py      the resident adapters' weights in RAM, the few slots in the pipeline.
- fusion.py     the applied mix merged into the base weights, undone bit for bit; recent mixes' merged weights.
- lora_files.py LoRA file layouts (peft, kohya, old diffusers ...), the checked read, AdapterInfo, trigger words.
                A new adapter file layout starts here; LyCORIS files in lycoris_files.py, peft's own saves (three
                spellings, their LoraConfig's alpha) in peft_files.py, the load report in lora_report.py, and the
                reasons a refusal gives in diagnosis.py.
- checks.py     a pipeline repo's configs and declared sizes, checked before anything is downloaded or built.
- export.py     a mix written out as one LoRA file. sweep.py: X/Y grids of weights. prompts.py: trigger words.
"""
