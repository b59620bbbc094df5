"""The web service: ONNX Runtime predictor, FastAPI app, web page. Never imports torch.

Entry points: ``seedlings serve`` (:mod:`seedlings.serving.cli`) and
``create_app(settings)`` (:mod:`seedlings.serving.app`). Nothing is imported here so that
``import seedlings.serving.cli`` stays cheap for ``seedlings --help``.
"""
