using Idem.TestUtils;
using Xunit;

namespace Idem.DataLayer.Tests;

/// <summary>The run's shared PostgreSQL (CI's server from <c>IDEM_TEST_POSTGRES</c>, or one the fixture starts); each test makes its own database.</summary>
[CollectionDefinition(Name)]
public sealed class SharedPostgreSql : ICollectionFixture<PostgreSqlServer>
{
    public const string Name = "SharedPostgreSql";
}
