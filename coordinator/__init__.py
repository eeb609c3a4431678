"""Cluster-wide coordination (``taskward.coordinator``): replicated cluster tasks, membership, leader
election, and the store interface they stand on. It may use the node's domain types; the node uses it
only through ``taskward.cluster_view.ClusterView``, wired in ``taskward.app``."""

if __name__ != "taskward.coordinator":  # ``import coordinator`` from the repository root: a second copy
    raise ImportError(f"the repository's coordinator/ folder is the package 'taskward.coordinator': import "
                      f"taskward.coordinator, not {__name__} (install it with: pip install -e .)")
