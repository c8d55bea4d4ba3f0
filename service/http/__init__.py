"""HTTP front-end: the BentoML service (``frontend.py``), its launcher and BentoML/uvicorn glue
(``bento.py``) and the Open Inference Protocol REST routes (``v2.py``). Import
``service.http.frontend`` only where BentoML should serve it: it builds the service at import."""
