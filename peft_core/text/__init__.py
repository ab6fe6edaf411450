"""The text side: one causal LM shared by every visitor, its peft adapters, training, merging and generation.

Data flows one way: request -> validate -> the adapter pool (peft_core/pool.py) under the lock -> the model -> text.
Which file to open:

- studio.py   `TextStudio`, what ui/ and app.py call: every check of a request, the pool, the lock, the turns.
              It imports no model library, and answers the image studio's verbs (load_base, base_info,
              load_adapter, generate, compare ...).
- requests.py `TextRequest` (one generation) and `ModelInfo` (the loaded base), as image/requests.py.
- batching.py `TextBatcher`: concurrent generations gathered for a few ms and run as one mixed-adapter batch.
- model.py    `TextModel`, the backend: the only object the studio reaches transformers, peft and torch through
              (load the LM, load / add / merge / train / delete adapters, set the active set, generate, export).
              To put the text side on another backend, replace this file and its helpers:
  - fit.py      does a checked adapter fit the model? peft builds it on a meta-device copy first;
  - layers.py   the adapters peft put into the model: targetable modules, parameters, records, undo, export;
  - merge.py    peft's add_weighted_adapter on the transformers model, and what it would refuse;
  - train.py    the training loop of one adapter on pasted text;
  - mixed.py    how a generation's rows reach their adapters: peft's mixed batch, a lone LoRA merged, the set.
- adapters.py what is known about an adapter without a model: its record, and its folder read and checked.
- repos.py    which Hub repos are a causal LM or a peft adapter, judged from their file lists.
"""
