"""The Gradio side of Adapter Studio: one module per tab, plus what they share. Only `app.py` and this package
import gradio; every handler is a line or two into `peft_core`.

- api.py            the named API: every endpoint's typed function (docs/API.md); app.py registers them
- images_tab.py     the Images tab's layout; image_handlers.py what its events do; image_cards.py its adapter cards
- text_tab.py       the Text tab's layout; text_handlers.py what its events do; text_cards.py its adapter cards
- descriptions.py   an adapter card's one-line description, from its model card
- preset_gallery.py the presets as shown, greyed with the reason where this machine cannot run them
- recipe.py         PNGs that carry their recipe, for API clients and the page
- snippets.py       the "use via API" panel: a gradio_client snippet of what is on screen
- common.py         what the tabs share: the session around each call, refusals as gr.Error, the CSS
- gradio_private.py gradio's private parts, read here only (DEVELOPMENT.md says why)
"""
