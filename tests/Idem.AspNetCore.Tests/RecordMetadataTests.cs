using System.Net;
using System.Text;
using Idem.TestUtils;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Xunit;

namespace Idem.AspNetCore.Tests;

/// <summary>
/// The metadata a claim carries for operators (principal hash, "METHOD route"). The anonymous principal's hash is computed
/// once and shared by every request without a user; each claim must still carry exactly its own request's metadata.
/// </summary>
public sealed class RecordMetadataTests
{
    [Fact]
    public async Task Claims_carry_each_requests_own_principal_hash_and_method_and_route_pattern()
    {
        var store = new CountingStore(new InMemoryIdempotencyStore());
        await using var app = await TestApp.StartAsync(
            a =>
            {
                a.MapPost("/orders/{id}", (string id) => TypedResults.Ok(new { id })).RequireIdempotency();
                a.MapPatch("/orders/{id}", (string id) => TypedResults.Ok(new { id })).RequireIdempotency();
                a.MapPost("/refunds", () => TypedResults.Ok()).RequireIdempotency();
            },
            b => b.UseStore(_ => store));

        (HttpMethod Method, string Path, string? User)[] requests =
        [
            (HttpMethod.Post, "/orders/1", null),
            (HttpMethod.Post, "/orders/2", null), // same method and route, another key
            (HttpMethod.Patch, "/orders/1", null), // same route, another method
            (HttpMethod.Post, "/refunds", null), // another route
            (HttpMethod.Post, "/orders/3", "alice"), // a principal: its own hash, never the anonymous one
            (HttpMethod.Post, "/orders/4", null), // anonymous again after an authenticated request
        ];
        foreach (var (method, path, user) in requests)
        {
            using var request = new HttpRequestMessage(method, path) { Content = new StringContent("{}", Encoding.UTF8, "application/json") };
            request.Headers.TryAddWithoutValidation("Idempotency-Key", Guid.NewGuid().ToString());
            if (user is not null)
            {
                request.Headers.Add("X-User", user);
            }

            using var response = await app.Client.SendAsync(request);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }

        var anonymous = IdempotencyScope.ComputePrincipalHash(string.Empty);
        var expected = new (string? PrincipalHash, string? Operation)[]
        {
            (anonymous, "POST /orders/{id}"),
            (anonymous, "POST /orders/{id}"),
            (anonymous, "PATCH /orders/{id}"),
            (anonymous, "POST /refunds"),
            (IdempotencyScope.ComputePrincipalHash("alice"), "POST /orders/{id}"),
            (anonymous, "POST /orders/{id}"),
        };
        Assert.Equal(expected, store.ClaimMetadata.Select(m => (m?.PrincipalHash, m?.Operation)).ToArray());
        Assert.NotEqual(anonymous, IdempotencyScope.ComputePrincipalHash("alice"));
    }
}
