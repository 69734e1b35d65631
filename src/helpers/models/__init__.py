"""The models: the two VLMs (small synthetic ones and the 7B checkpoints), their training,
shipping and recording of draft/target pairs."""
