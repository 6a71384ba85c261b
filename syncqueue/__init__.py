"""The queue app: jobs, logs, the engine on django-q2, the dispatcher, and their surfaces.

Named ``syncqueue`` because a top-level package called ``queue`` would shadow Python's standard
``queue`` module, which multiprocessing (and so django-q2's ``qcluster``) imports.
"""
