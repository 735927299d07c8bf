"""KFP components: one per step of the step table (``components.steps``) and the run bookkeeping
(``components.run_control``)."""
