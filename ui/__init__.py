"""The Gradio side of Adapter Studio: one module per tab, plus what they share. Only `app.py` and this package
import gradio; every handler is a line or two into `peft_core`. gradio's private parts are read in
gradio_private.py only (DEVELOPMENT.md says why)."""
