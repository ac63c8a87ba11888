"""What comes in: audio files (``audio``: the Clip type, load, validate, resample), prompt suites
(``prompts``: TTA-Bench JSON, AudioCaps jsonl, text, the Prompt type) and folders of audio paired
with prompts by id (``folder``)."""
