"""The model core every other part stands on: loading, family facts, the recorder, capture, edits."""
