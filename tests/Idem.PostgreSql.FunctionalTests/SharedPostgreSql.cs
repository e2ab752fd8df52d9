using Idem.TestUtils;
using Xunit;

namespace Idem.PostgreSql.FunctionalTests;

/// <summary>
/// The run's shared PostgreSQL (CI's server from <c>IDEM_TEST_POSTGRES</c>, or one the fixture starts). Every test uses its
/// own schema. Tests that stop a server start a private one instead (<see cref="PostgreSqlServer.StartPrivateAsync"/>).
/// </summary>
[CollectionDefinition(Name)]
public sealed class SharedPostgreSql : ICollectionFixture<PostgreSqlServer>
{
    public const string Name = "SharedPostgreSql";
}
