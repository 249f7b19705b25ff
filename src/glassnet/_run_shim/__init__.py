"""Top-level ``keras``, ``tensorflow`` and ``tf_keras`` packages that ``glassnet run`` puts first on ``sys.path``.

Inside ``glassnet run`` the import hook (keras_import.install) resolves ``import keras`` to glassnet.keras. Processes
the script starts with multiprocessing's spawn method do not inherit that hook, but they do inherit ``sys.path``:
there these stand-ins are found first, install the hook and become glassnet.keras (or the tensorflow shim) —
instead of the real Keras, which needs a backend the script never asked for (a worker pool then hung).
"""
