"""The suite (docs/DEVELOPMENT.md#tests). Each test_<module>.py holds the tests of one module, or of one behaviour
across modules (test_bad_inputs.py, test_concurrency.py ...); what they share:

    conftest.py          the tiny models and LoRA repos, built once per session; EnvPatch; launch_app
    hubserver.py         a real Hub server (olah) on loopback, and pointing huggingface_hub at it
    faultproxy.py        a proxy in front of it that drops, stalls or cuts what the Hub sends
    layout_keys.py       the key names of every published LoRA layout, for the layout tests
    reliability_table.py the catalogues of bad and hostile inputs as Markdown (docs/RELIABILITY.md)
    session_memory.py    a session's memory given back, measured in a process of its own
"""
