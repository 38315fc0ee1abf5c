"""normscope during training: callbacks that scan the live model (`sources.memory`), log its
norms and stop the run when the check's gate trips.

- `normscope.integrations.hf.NormscopeCallback`: a transformers `TrainerCallback`
  (`pip install 'normscope[hf]'`).
- `normscope.integrations.lightning.NormscopeCallback`: a Lightning `Callback`
  (`pip install 'normscope[lightning]'`).
- `normscope.integrations.monitor.NormMonitor`: the framework-neutral part both use.

Nothing here is imported by `import normscope` or by a scan: the frameworks load only when a
callback module is imported.
"""
