"""CoderForge on Kubernetes: image references, KFP task placement, KubeRay RayJobs, run submission.

Nothing here is imported by the embedded (single-machine) path except ``images``.
"""
