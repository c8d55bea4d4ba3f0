"""HTTP front-end: the BentoML service (``service.py``) and the Open Inference Protocol REST routes
(``v2.py``). Import ``service.http.frontend`` only where BentoML should serve it: it builds the
BentoML service object at import."""
