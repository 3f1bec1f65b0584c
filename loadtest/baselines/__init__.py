"""Servers ShopCast is measured against in the same run (same HTTP contract, same workload)."""
