"""Readers that turn other frameworks' MobileNet V1 files into our config and state dict.

Each reader returns ``(config, state_dict, info)``; :func:`mobilenets.load_pretrained`
chooses the reader by the file's content and loads the result strictly.
"""
