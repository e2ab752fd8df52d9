using System.Buffers;
using System.Security.Cryptography;
using System.Text.Json;

namespace Idem.AspNetCore;

/// <summary>Hashes a JSON document by meaning: object properties sorted by name, insignificant whitespace dropped.</summary>
internal static class CanonicalJson
{
    /// <returns>The hex SHA-256 of the canonical form, or <see langword="null"/> when the body is not valid JSON (the handler will say why).</returns>
    public static async Task<string?> TryHashAsync(Stream body, CancellationToken cancellationToken)
    {
        JsonDocument document;
        try
        {
            document = await JsonDocument.ParseAsync(body, default, cancellationToken).ConfigureAwait(false);
        }
        catch (JsonException)
        {
            return null;
        }

        using (document)
        {
            var output = new ArrayBufferWriter<byte>();
            using (var writer = new Utf8JsonWriter(output))
            {
                Write(document.RootElement, writer);
            }

            return Convert.ToHexStringLower(SHA256.HashData(output.WrittenSpan));
        }
    }

    private static void Write(JsonElement element, Utf8JsonWriter writer)
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.Object:
                writer.WriteStartObject();
                foreach (var property in element.EnumerateObject().OrderBy(p => p.Name, StringComparer.Ordinal))
                {
                    writer.WritePropertyName(property.Name);
                    Write(property.Value, writer);
                }

                writer.WriteEndObject();
                break;
            case JsonValueKind.Array:
                writer.WriteStartArray();
                foreach (var item in element.EnumerateArray())
                {
                    Write(item, writer);
                }

                writer.WriteEndArray();
                break;
            default:
                element.WriteTo(writer);
                break;
        }
    }
}
