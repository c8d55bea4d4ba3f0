// Swagger UI over /docs.json; "Try it out" sends requests to this server.
window.addEventListener("load", () => {
  window.ui = SwaggerUIBundle({
    url: "docs.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // Offline: no badge image from validator.swagger.io.
    validatorUrl: null,
  });
});
