using System.Linq.Expressions;
using System.Reflection;
using Idem.DataLayer;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Infrastructure;
using Microsoft.EntityFrameworkCore.Metadata;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Idem.EntityFrameworkCore;

/// <summary>An entity type's table, columns and parameters, read from the EF Core model of the set's context.</summary>
internal sealed class EntityTableMapping
{
    private const string NpgsqlProvider = "Npgsql.EntityFrameworkCore.PostgreSQL";
    private const string SqliteProvider = "Microsoft.EntityFrameworkCore.Sqlite";

    private readonly DbContext _context;
    private readonly StoreObjectIdentifier _storeObject;

    private EntityTableMapping(DbContext context, IEntityType entityType, SqlDialect dialect, ILogger logger)
    {
        _context = context;
        EntityType = entityType;
        Dialect = dialect;
        Logger = logger;
        TableName = entityType.GetTableName()
            ?? throw new InvalidOperationException($"The entity type '{entityType.DisplayName()}' is not mapped to a table.");
        // Owned and complex types live in other columns (or tables) that these statements neither insert nor return:
        // refused here rather than inserted half (a NOT NULL column failing, or a nullable one silently left empty).
        if (entityType.GetNavigations().FirstOrDefault(n => n.TargetEntityType.IsOwned() && !n.IsOnDependent) is { } owned)
        {
            throw new NotSupportedException(
                $"The entity type '{entityType.DisplayName()}' has the owned type '{owned.Name}': create-or-get and unique-slug inserts handle entity types whose columns are their own scalar properties (value converters apply). Use the ADO.NET helpers (Idem.PostgreSql, Idem.Sqlite) with the table's columns instead.");
        }

        if (entityType.GetComplexProperties().FirstOrDefault() is { } complex)
        {
            throw new NotSupportedException(
                $"The entity type '{entityType.DisplayName()}' has the complex property '{complex.Name}' (not owned, but stored in its own columns): create-or-get and unique-slug inserts handle entity types whose columns are their own scalar properties (value converters apply). Use the ADO.NET helpers (Idem.PostgreSql, Idem.Sqlite) with the table's columns instead.");
        }

        _storeObject = StoreObjectIdentifier.Table(TableName, entityType.GetSchema());
        Table = DataLayerSql.Table(TableName, entityType.GetSchema());
        Mapped = [.. entityType.GetProperties().Where(p => p.GetColumnName(_storeObject) is not null)];
        AllColumns = [.. Mapped.Select(Column)];
    }

    public IEntityType EntityType { get; }

    public SqlDialect Dialect { get; }

    public ILogger Logger { get; }

    /// <summary>The table's name, unquoted (the metrics' tag).</summary>
    public string TableName { get; }

    /// <summary>The table's name, quoted, with its schema.</summary>
    public string Table { get; }

    public IProperty[] Mapped { get; }

    public string[] AllColumns { get; }

    public static EntityTableMapping For<TEntity>(DbSet<TEntity> set)
        where TEntity : class
    {
        var context = set.GetService<ICurrentDbContext>().Context;
        var dialect = context.Database.ProviderName switch
        {
            NpgsqlProvider => SqlDialect.PostgreSql,
            SqliteProvider => SqlDialect.Sqlite,
            var other => throw new NotSupportedException($"Idem.EntityFrameworkCore supports PostgreSQL (Npgsql) and SQLite; this context uses '{other}'."),
        };
        var logger = context.GetService<ILoggerFactory>()?.CreateLogger("Idem.EntityFrameworkCore") ?? NullLogger.Instance;
        return new EntityTableMapping(context, set.EntityType, dialect, logger);
    }

    public string Column(IProperty property) => property.GetColumnName(_storeObject)
        ?? throw new ArgumentException($"The property '{property.Name}' has no column in '{TableName}'.");

    /// <summary>The properties a lambda names: <c>e => e.A</c> or <c>e => new { e.A, e.B }</c>.</summary>
    public static IProperty[] Properties(IEntityType entityType, LambdaExpression expression, string parameterName)
    {
        var body = expression.Body is UnaryExpression { NodeType: ExpressionType.Convert or ExpressionType.ConvertChecked } convert ? convert.Operand : expression.Body;
        Expression[] members = body switch
        {
            MemberExpression member => [member],
            NewExpression anonymous => [.. anonymous.Arguments],
            _ => throw new ArgumentException("Name properties of the entity: e => e.Key, or e => new { e.A, e.B }.", parameterName),
        };
        return
        [
            .. members.Select(m => m is UnaryExpression { NodeType: ExpressionType.Convert } u ? u.Operand : m).Select(m =>
                m is MemberExpression { Member: PropertyInfo or FieldInfo } member && member.Expression is ParameterExpression
                    ? entityType.FindProperty(member.Member.Name) ?? throw new ArgumentException($"'{member.Member.Name}' is not a mapped property of '{entityType.DisplayName()}'.", parameterName)
                    : throw new ArgumentException("Name properties of the entity: e => e.Key, or e => new { e.A, e.B }.", parameterName)),
        ];
    }

    /// <summary>
    /// The inserted columns and their values. The entity is marked Added for a moment so that EF Core's own client-side
    /// value generation runs (a Guid key left empty gets its value); temporary values (a database identity) and
    /// store-generated properties left at their sentinel are left to the database, as SaveChanges would.
    /// </summary>
    public InsertRow Values(object entity, IProperty? exclude)
    {
        var entry = _context.Entry(entity);
        if (entry.State != EntityState.Detached)
        {
            throw new InvalidOperationException("Pass a new entity instance the context does not track; the row is read back and tracked as a new instance.");
        }

        entry.State = EntityState.Added;
        try
        {
            var columns = new List<string>();
            var values = new List<object?>();
            var properties = new List<IProperty>();
            foreach (var property in Mapped)
            {
                if (property == exclude || property.GetComputedColumnSql() is not null)
                {
                    continue;
                }

                var propertyEntry = entry.Property(property);
                var value = propertyEntry.CurrentValue;
                if (propertyEntry.IsTemporary || (property.ValueGenerated != ValueGenerated.Never && Equals(value, property.Sentinel)))
                {
                    continue;
                }

                columns.Add(Column(property));
                values.Add(value);
                properties.Add(property);
            }

            return new InsertRow([.. columns], [.. values], [.. properties]);
        }
        finally
        {
            entry.State = EntityState.Detached;
        }
    }

    /// <summary>Fresh parameters @p0… for a row, typed by each property's own mapping (value converters applied).</summary>
    public List<object> Parameters(InsertRow row)
    {
        using var command = _context.Database.GetDbConnection().CreateCommand();
        var parameters = new List<object>(row.Values.Length + 4);
        for (var i = 0; i < row.Values.Length; i++)
        {
            var property = row.Properties[i];
            parameters.Add(property.GetRelationalTypeMapping().CreateParameter(command, DataLayerSql.ValueParameter(i)[1..], row.Values[i], property.IsNullable));
        }

        return parameters;
    }

    public object Parameter(string name, object value)
    {
        using var command = _context.Database.GetDbConnection().CreateCommand();
        var parameter = command.CreateParameter();
        parameter.ParameterName = name[1..];
        parameter.Value = value;
        return parameter;
    }
}

internal sealed record InsertRow(string[] Columns, object?[] Values, IProperty[] Properties)
{
    public int IndexOf(IProperty property) => Array.IndexOf(Properties, property);
}
