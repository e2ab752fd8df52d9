using Microsoft.AspNetCore.OpenApi;
using Microsoft.OpenApi;

namespace Idem.AspNetCore;

/// <summary>Documents the <c>Idempotency-Key</c> header on protected operations of every OpenAPI document.</summary>
internal static class IdempotencyOpenApi
{
    public static void AddHeaderTransformer(OpenApiOptions openApi, Func<IdempotencyOptions> options) =>
        openApi.AddOperationTransformer((operation, context, _) =>
        {
            var metadata = context.Description.ActionDescriptor.EndpointMetadata.OfType<IIdempotencyEndpointMetadata>().LastOrDefault();
            if (metadata is null)
            {
                return Task.CompletedTask;
            }

            var app = options();
            var methods = metadata.Options.Methods ?? (IEnumerable<string>)app.Methods;
            if (!methods.Contains(context.Description.HttpMethod ?? string.Empty, StringComparer.OrdinalIgnoreCase))
            {
                return Task.CompletedTask;
            }

            operation.Parameters ??= [];
            if (operation.Parameters.Any(p => string.Equals(p.Name, app.HeaderName, StringComparison.OrdinalIgnoreCase)))
            {
                return Task.CompletedTask;
            }

            operation.Parameters.Add(new OpenApiParameter
            {
                Name = app.HeaderName,
                In = ParameterLocation.Header,
                Required = metadata.Options.RequireKey ?? app.RequireKey,
                Description = "A unique value per operation (for example a UUID), reused on retries: the operation runs once and " +
                    "retries get its stored response with `Idempotent-Replayed: true`. 1-255 visible ASCII characters. " +
                    "Reusing it for a different request answers 422; while the first request runs, 409 with Retry-After.",
                Schema = new OpenApiSchema { Type = JsonSchemaType.String, MinLength = 1, MaxLength = IdempotencyKey.MaxLength },
            });
            return Task.CompletedTask;
        });
}
