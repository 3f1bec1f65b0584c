"""White-box benchmarks: they import ``sfu`` and time its code in-process.

``loadtest`` measures what a user sees and speaks only public protocols; what needs the SFU's
own objects (a ``Producer`` fanning out to real ``Consumer`` s) lives here instead. Each module
runs on its own: ``python -m benchmarks.path``.
"""
