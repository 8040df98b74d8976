"""The embedded default: deterministic built-in data (``data``), model presets and the shipped
pre-trained bases (``presets``, files under ``assets/``), and the locally trained tokenizer
(``tokenizer``). ``python scripts/build_builtin.py`` regenerates the assets."""
