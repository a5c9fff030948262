"""The HDF5 shard format: ``schema`` (version, dataset names, ``load_index``), ``writer`` (one
shard), ``reader`` (AudioShards, ImageShards, BucketBatchSampler, collate_audio) and ``tools``
(info, validate, export to Kaldi).  The ``shard`` stage that makes a set is
:mod:`pvae_data.stages.shard`."""
