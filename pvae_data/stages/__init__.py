"""One module per ``pvae-data`` command that makes a directory: ``download``, ``prepare``,
``trim``, ``align_train``, ``segment``, ``fbank``, ``shard``.  Each reads the previous stage's
manifest and accounts for every input (``pvae_data.stage``); the pure math they call (``fbank``,
``vad``, ``align``, ``audio``, ``mnist``) lives flat in :mod:`pvae_data`."""
