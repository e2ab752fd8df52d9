using System.Collections.Concurrent;
using System.Data.Common;
using System.Linq.Expressions;
using System.Reflection;
using System.Runtime.CompilerServices;
using Idem.DataLayer;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Diagnostics;
using Microsoft.EntityFrameworkCore.Infrastructure;
using Microsoft.EntityFrameworkCore.Metadata;
using Microsoft.EntityFrameworkCore.Storage;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Idem.EntityFrameworkCore;

/// <summary>An entity type's table, columns and parameters, read from the EF Core model of the set's context.</summary>
internal sealed class EntityTableMapping
{
    private const string NpgsqlProvider = "Npgsql.EntityFrameworkCore.PostgreSQL";
    private const string SqliteProvider = "Microsoft.EntityFrameworkCore.Sqlite";

    private static readonly ConditionalWeakTable<IEntityType, TableShape> Shapes = new();

    private readonly DbContext _context;
    private readonly TableShape _shape;
    private ILogger? _logger;

    private EntityTableMapping(DbContext context, TableShape shape, SqlDialect dialect)
    {
        _context = context;
        _shape = shape;
        Dialect = dialect;
    }

    public IEntityType EntityType => _shape.EntityType;

    /// <summary>The set's context.</summary>
    public DbContext Context => _context;

    public SqlDialect Dialect { get; }

    /// <summary>The context's logger, made when something is logged (most calls log nothing).</summary>
    public ILogger Logger => _logger ??= _context.GetService<ILoggerFactory>()?.CreateLogger("Idem.EntityFrameworkCore") ?? NullLogger.Instance;

    /// <summary>The table's name, unquoted (the metrics' tag).</summary>
    public string TableName => _shape.TableName;

    /// <summary>The table's name, quoted, with its schema.</summary>
    public string Table => _shape.Table;

    public IProperty[] Mapped => _shape.Mapped;

    public string[] AllColumns => _shape.AllColumns;

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
        // The model's entity types live as long as the model (built once per context type), so what is read from one is
        // read once; a shape that cannot be mapped throws from the factory and is not kept.
        return new EntityTableMapping(context, Shapes.GetValue(set.EntityType, static e => new TableShape(e)), dialect);
    }

    /// <summary>
    /// The create-or-get statements for a row that inserts <paramref name="row"/>'s columns with the natural key at
    /// <paramref name="keyOrdinals"/>, built once per set of columns and key (an entity whose generated key is left to
    /// the database inserts fewer columns than one that sets it).
    /// </summary>
    public CreateOrGetSql CreateOrGet(InsertRow row, int[] keyOrdinals) =>
        _shape.Statements.GetOrAdd(new StatementKey(row.Properties, keyOrdinals), static (key, args) => new CreateOrGetSql(key, args), (_shape, row.Columns));

    public string Column(IProperty property) => _shape.Column(property);

    /// <summary>The read by a natural key and the streak of its calls, built once per entity type and key.</summary>
    public NaturalKeyLookup Lookup(IProperty[] keyProperties) =>
        _shape.Lookups.GetOrAdd(new PropertySet(keyProperties), static (key, shape) => new NaturalKeyLookup(shape, key.Properties), _shape);

    /// <summary>
    /// The natural key's values read straight from the entity's properties, without tracking it, or
    /// <see langword="null"/> when one is missing or left to value generation (the full <see cref="Values"/> decides
    /// those, and reports a missing one).
    /// </summary>
    public static object?[]? KeyValues(object entity, IProperty[] keyProperties)
    {
        var values = new object?[keyProperties.Length];
        for (var i = 0; i < keyProperties.Length; i++)
        {
            var property = keyProperties[i];
            if (property.IsShadowProperty())
            {
                return null;
            }

            var value = property.GetGetter().GetClrValueUsingContainingEntity(entity);
            if (value is null || (property.ValueGenerated != ValueGenerated.Never && Equals(value, property.Sentinel)))
            {
                return null;
            }

            values[i] = value;
        }

        return values;
    }

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
            throw new InvalidOperationException("Pass a new entity instance the context does not track: the call inserts it, or returns the row that already has its key.");
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

    /// <summary>
    /// Runs an insert that returns the table's columns in <see cref="Mapped"/> order, or no row when it inserted nothing,
    /// through EF Core's own command pipeline as <c>ExecuteSqlRaw</c> does (on the context's connection and in its
    /// transaction; its logging, interceptors and diagnostics see the statement). When a row came back,
    /// <paramref name="entity"/> gets the values the database generated (identity, defaults, a slug) and is tracked
    /// Unchanged, unless the context does not track queries: the entity <c>SaveChanges</c> would leave. Reading the
    /// row back as a query (<c>FromSqlRaw</c>) would cost more than the insert: EF Core builds such a query's SQL anew
    /// on every call.
    /// </summary>
    public async Task<bool> InsertAsync(object entity, InsertRow row, string sql, List<object> parameters, CancellationToken cancellationToken)
    {
        var generated = _shape.Generated(row);
        var strategy = _context.Database.CreateExecutionStrategy();
        var values = await strategy.ExecuteAsync(
            (Mapping: this, Sql: sql, Parameters: parameters, Generated: generated),
            static (_, state, ct) => state.Mapping.ExecuteInsertAsync(state.Sql, state.Parameters, state.Generated, ct),
            null,
            cancellationToken).ConfigureAwait(false);
        if (values is null)
        {
            return false;
        }

        var entry = _context.Entry(entity);
        for (var i = 0; i < generated.Length; i++)
        {
            entry.Property(Mapped[generated[i]]).CurrentValue = values[i];
        }

        if (_context.ChangeTracker.QueryTrackingBehavior == QueryTrackingBehavior.TrackAll)
        {
            entry.State = EntityState.Unchanged;
        }

        return true;
    }

    private async Task<object?[]?> ExecuteInsertAsync(string sql, List<object> parameters, int[] generated, CancellationToken cancellationToken)
    {
        using var criticalSection = _context.GetService<IConcurrencyDetector>().EnterCriticalSection();
        var command = _context.GetService<IRawSqlCommandBuilder>().Build(sql, parameters, _context.Model);
        var reader = await command.RelationalCommand.ExecuteReaderAsync(
            new RelationalCommandParameterObject(
                _context.GetService<IRelationalConnection>(),
                command.ParameterValues,
                readerColumns: null,
                _context,
                _context.GetService<IRelationalCommandDiagnosticsLogger>(),
                CommandSource.ExecuteSqlRaw),
            cancellationToken).ConfigureAwait(false);
        await using (reader.ConfigureAwait(false))
        {
            if (!await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                return null;
            }

            var values = new object?[generated.Length];
            for (var i = 0; i < generated.Length; i++)
            {
                values[i] = _shape.Read(reader.DbDataReader, generated[i]);
            }

            return values;
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

/// <summary>What the model says of an entity type's table, read once per entity type.</summary>
internal sealed class TableShape
{
    private readonly StoreObjectIdentifier _storeObject;
    private readonly ConcurrentDictionary<PropertySet, int[]> _generated = new();
    private readonly ConcurrentDictionary<IProperty, Func<DbDataReader, int, object?>> _readers = new();

    public TableShape(IEntityType entityType)
    {
        EntityType = entityType;
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

    public string TableName { get; }

    public string Table { get; }

    public IProperty[] Mapped { get; }

    public string[] AllColumns { get; }

    /// <summary>The create-or-get statements per inserted columns and key; a handful per entity type.</summary>
    public ConcurrentDictionary<StatementKey, CreateOrGetSql> Statements { get; } = new();

    /// <summary>The reads by natural key and their streaks; one per key an application uses.</summary>
    public ConcurrentDictionary<PropertySet, NaturalKeyLookup> Lookups { get; } = new();

    /// <summary>The ordinals in <see cref="Mapped"/> of the columns an insert of <paramref name="row"/> leaves to the database.</summary>
    public int[] Generated(InsertRow row) =>
        _generated.GetOrAdd(new PropertySet(row.Properties), static (key, mapped) =>
        [
            .. Enumerable.Range(0, mapped.Length).Where(i => Array.IndexOf(key.Properties, mapped[i]) < 0),
        ], Mapped);

    /// <summary>
    /// The value of <see cref="Mapped"/>[<paramref name="ordinal"/>] at the same ordinal of a row, read as EF Core's own
    /// materializer reads it: the type mapping's reader method, then its value converter.
    /// </summary>
    public object? Read(DbDataReader reader, int ordinal) =>
        reader.IsDBNull(ordinal) ? null : _readers.GetOrAdd(Mapped[ordinal], static p => ReaderFor(p.GetRelationalTypeMapping()))(reader, ordinal);

    /// <summary>Reads a non-null column through the type mapping's reader method, then its value converter.</summary>
    private static Func<DbDataReader, int, object?> ReaderFor(RelationalTypeMapping typeMapping)
    {
        var method = typeMapping.GetDataReaderMethod();
        var reader = Expression.Parameter(typeof(DbDataReader), "reader");
        var ordinal = Expression.Parameter(typeof(int), "ordinal");
        Expression instance = method.DeclaringType!.IsAssignableFrom(typeof(DbDataReader)) ? reader : Expression.Convert(reader, method.DeclaringType);
        var read = typeMapping.CustomizeDataReaderExpression(Expression.Call(instance, method, ordinal));
        var compiled = Expression.Lambda<Func<DbDataReader, int, object?>>(Expression.Convert(read, typeof(object)), reader, ordinal).Compile();
        return typeMapping.Converter is { } converter ? (r, i) => converter.ConvertFromProvider(compiled(r, i)) : compiled;
    }

    public string Column(IProperty property) => property.GetColumnName(_storeObject)
        ?? throw new ArgumentException($"The property '{property.Name}' has no column in '{TableName}'.");
}

/// <summary>Inserted properties and the key's ordinals among them, compared by their elements.</summary>
internal sealed class StatementKey(IProperty[] inserted, int[] keyOrdinals) : IEquatable<StatementKey>
{
    public IProperty[] Inserted { get; } = inserted;

    public int[] KeyOrdinals { get; } = keyOrdinals;

    public bool Equals(StatementKey? other) =>
        other is not null && Inserted.AsSpan().SequenceEqual(other.Inserted) && KeyOrdinals.AsSpan().SequenceEqual(other.KeyOrdinals);

    public override bool Equals(object? obj) => Equals(obj as StatementKey);

    public override int GetHashCode()
    {
        var hash = new HashCode();
        foreach (var property in Inserted)
        {
            hash.Add(property);
        }

        foreach (var ordinal in KeyOrdinals)
        {
            hash.Add(ordinal);
        }

        return hash.ToHashCode();
    }
}

/// <summary>Properties compared by their elements (a natural key).</summary>
internal sealed class PropertySet(IProperty[] properties) : IEquatable<PropertySet>
{
    public IProperty[] Properties { get; } = properties;

    public bool Equals(PropertySet? other) => other is not null && Properties.AsSpan().SequenceEqual(other.Properties);

    public override bool Equals(object? obj) => Equals(obj as PropertySet);

    public override int GetHashCode()
    {
        var hash = new HashCode();
        foreach (var property in Properties)
        {
            hash.Add(property);
        }

        return hash.ToHashCode();
    }
}

/// <summary>
/// A natural key's read, an EF Core query compiled once per tracking behaviour (value converters applied, the row
/// tracked as the context tracks queries), and the streak of its calls, which decides the first statement of the next
/// (<see cref="CreateOrGetStreak"/>).
/// </summary>
internal sealed class NaturalKeyLookup
{
    private static readonly MethodInfo PropertyMethod = typeof(EF).GetMethod(nameof(EF.Property))!;
    private static readonly MethodInfo SetMethod = typeof(DbContext).GetMethod(nameof(DbContext.Set), Type.EmptyTypes)!;
    private static readonly MethodInfo IgnoreQueryFiltersMethod = typeof(EntityFrameworkQueryableExtensions).GetMethod(nameof(EntityFrameworkQueryableExtensions.IgnoreQueryFilters), [typeof(IQueryable<>).MakeGenericType(Type.MakeGenericMethodParameter(0))])!;
    private static readonly MethodInfo FirstOrDefaultMethod = typeof(Queryable).GetMethods()
        .Single(m => m.Name == nameof(Queryable.FirstOrDefault) && m.GetParameters() is [_, { ParameterType.Name: "Expression`1" }]);

    private static readonly Dictionary<QueryTrackingBehavior, MethodInfo> TrackingMethods = new()
    {
        [QueryTrackingBehavior.TrackAll] = typeof(EntityFrameworkQueryableExtensions).GetMethod(nameof(EntityFrameworkQueryableExtensions.AsTracking), 1, [typeof(IQueryable<>).MakeGenericType(Type.MakeGenericMethodParameter(0))])!,
        [QueryTrackingBehavior.NoTracking] = typeof(EntityFrameworkQueryableExtensions).GetMethod(nameof(EntityFrameworkQueryableExtensions.AsNoTracking))!,
        [QueryTrackingBehavior.NoTrackingWithIdentityResolution] = typeof(EntityFrameworkQueryableExtensions).GetMethod(nameof(EntityFrameworkQueryableExtensions.AsNoTrackingWithIdentityResolution))!,
    };

    // EF.CompileAsyncQuery<TContext, TParam1…TParamN, TResult>(Expression<Func<TContext, TParam1…, CancellationToken,
    // TResult>>) for a single result (it returns Func<TContext, TParam1…, CancellationToken, Task<TResult>>: the token
    // reaches the query), by the number of parameters N.
    private static readonly Dictionary<int, MethodInfo> CompileAsyncQueryMethods = typeof(EF).GetMethods()
        .Where(m => m.Name == nameof(EF.CompileAsyncQuery)
            && m.ReturnType.GetGenericArguments()[^1] is { IsGenericType: true } result && result.GetGenericTypeDefinition() == typeof(Task<>)
            && m.GetGenericArguments().Length >= 3
            && m.GetParameters()[0].ParameterType.GetGenericArguments()[0].GetGenericArguments() is var query
            && query.Length == m.GetGenericArguments().Length + 1 && query[^2] == typeof(CancellationToken))
        .ToDictionary(m => m.GetGenericArguments().Length - 2);

    private readonly IProperty[] _properties;
    private readonly object?[] _reads = new object?[Enum.GetValues<QueryTrackingBehavior>().Length];

    public NaturalKeyLookup(TableShape shape, IProperty[] keyProperties)
    {
        if (!CompileAsyncQueryMethods.ContainsKey(keyProperties.Length))
        {
            throw new NotSupportedException(
                $"A natural key of {keyProperties.Length} columns on '{shape.TableName}': EF Core compiles a query with at most {CompileAsyncQueryMethods.Keys.Max()} parameters, so create-or-get handles keys of up to that many columns.");
        }

        _properties = keyProperties;
        KeyColumns = [.. keyProperties.Select(shape.Column)];
        HasQueryFilters = shape.EntityType.GetAllBaseTypesInclusive().Any(t => t.GetDeclaredQueryFilters().Count > 0);
    }

    /// <summary>The natural key's columns.</summary>
    public string[] KeyColumns { get; }

    /// <summary>
    /// Whether the entity type has query filters, which the read must ignore: a row a filter hides still holds the key
    /// (and the insert would meet it).
    /// </summary>
    public bool HasQueryFilters { get; }

    /// <summary>Which statement the next call sends first.</summary>
    public CreateOrGetStreak Streak { get; } = new();

    /// <summary>
    /// The row with <paramref name="values"/> as its natural key, or <see langword="null"/>: <c>FirstOrDefault(e =>
    /// e.A == a &amp;&amp; …)</c> as a query compiled with <c>EF.CompileAsyncQuery</c> (the token passed through),
    /// one per tracking behaviour, so a call skips EF Core's query cache lookup and parameter extraction, which cost
    /// more than SQLite's read itself. Query filters are ignored where the entity type has them.
    /// </summary>
    public Task<TEntity?> ReadAsync<TEntity>(DbContext context, object?[] values, CancellationToken cancellationToken)
        where TEntity : class
    {
        var behavior = context.ChangeTracker.QueryTrackingBehavior;
        ref var slot = ref _reads[(int)behavior];
        var read = Volatile.Read(ref slot) as Func<DbContext, object?[], CancellationToken, Task<TEntity?>>;
        if (read is null)
        {
            read = CompileRead<TEntity>(behavior);
            Volatile.Write(ref slot, read);
        }

        return read(context, values, cancellationToken);
    }

    private Func<DbContext, object?[], CancellationToken, Task<TEntity?>> CompileRead<TEntity>(QueryTrackingBehavior behavior)
        where TEntity : class
    {
        var context = Expression.Parameter(typeof(DbContext), "context");
        var keys = _properties.Select((p, i) => Expression.Parameter(p.ClrType, "key" + i)).ToArray();
        Expression rows = Expression.Call(context, SetMethod.MakeGenericMethod(typeof(TEntity)));
        if (HasQueryFilters)
        {
            rows = Expression.Call(IgnoreQueryFiltersMethod.MakeGenericMethod(typeof(TEntity)), rows);
        }

        rows = Expression.Call(TrackingMethods[behavior].MakeGenericMethod(typeof(TEntity)), rows);
        var first = Expression.Call(FirstOrDefaultMethod.MakeGenericMethod(typeof(TEntity)), rows, Expression.Quote(Predicate<TEntity>(keys)));
        var cancellationToken = Expression.Parameter(typeof(CancellationToken), "cancellationToken");
        var query = Expression.Lambda(first, [context, .. keys, cancellationToken]);
        var compiled = (Delegate)CompileAsyncQueryMethods[keys.Length]
            .MakeGenericMethod([typeof(DbContext), .. keys.Select(k => k.Type), typeof(TEntity)])
            .Invoke(null, [query])!;

        // (context, values, ct) => compiled(context, (T0)values[0], …, ct)
        var values = Expression.Parameter(typeof(object?[]), "values");
        var call = Expression.Invoke(
            Expression.Constant(compiled),
            [context, .. keys.Select((k, i) => Expression.Convert(Expression.ArrayIndex(values, Expression.Constant(i)), k.Type)), cancellationToken]);
        return Expression.Lambda<Func<DbContext, object?[], CancellationToken, Task<TEntity?>>>(call, context, values, cancellationToken).Compile();
    }

    /// <summary><c>e => e.A == key0 &amp;&amp; …</c>, each member as a hand-written lambda names it.</summary>
    private Expression<Func<TEntity, bool>> Predicate<TEntity>(ParameterExpression[] keys)
    {
        var entity = Expression.Parameter(typeof(TEntity), "e");
        Expression? body = null;
        for (var i = 0; i < _properties.Length; i++)
        {
            var property = _properties[i];
            Expression column = property.PropertyInfo is { } clrProperty ? Expression.Property(entity, clrProperty)
                : property.FieldInfo is { } field ? Expression.Field(entity, field)
                : Expression.Call(PropertyMethod.MakeGenericMethod(property.ClrType), entity, Expression.Constant(property.Name));
            var equal = EqualityFor(property.ClrType)(column, keys[i]);
            body = body is null ? equal : Expression.AndAlso(body, equal);
        }

        return Expression.Lambda<Func<TEntity, bool>>(body!, entity);
    }

    /// <summary>
    /// <c>a == b</c> as the C# compiler writes it: on the underlying type for an enum (expression trees define no
    /// <c>==</c> on enums), or <c>a.Equals((object)b)</c> for a struct without an equality operator (EF Core translates
    /// each).
    /// </summary>
    private static Func<Expression, Expression, Expression> EqualityFor(Type type)
    {
        var enumType = Nullable.GetUnderlyingType(type) ?? type;
        if (enumType.IsEnum)
        {
            var underlying = Enum.GetUnderlyingType(enumType);
            var compared = type == enumType ? underlying : typeof(Nullable<>).MakeGenericType(underlying);
            return (column, value) => Expression.Equal(Expression.Convert(column, compared), Expression.Convert(value, compared));
        }

        var probe = Expression.Parameter(type);
        try
        {
            Expression.Equal(probe, probe);
            return Expression.Equal;
        }
        catch (InvalidOperationException)
        {
            var equals = type.GetMethod(nameof(object.Equals), [typeof(object)])!;
            return (column, value) => Expression.Call(column, equals, Expression.Convert(value, typeof(object)));
        }
    }
}

/// <summary>A create-or-get's insert statements for one set of inserted columns and key.</summary>
internal sealed class CreateOrGetSql
{
    public CreateOrGetSql(StatementKey key, (TableShape Shape, string[] Columns) args)
    {
        var (shape, columns) = args;
        var keyColumns = key.KeyOrdinals.Select(i => columns[i]).ToArray();
        Combined = DataLayerSql.CreateOrGetRows(shape.Table, columns, keyColumns, key.KeyOrdinals, shape.AllColumns);
        InsertOnly = DataLayerSql.InsertOrNothing(shape.Table, columns, keyColumns, shape.AllColumns);
    }

    /// <summary>PostgreSQL's one statement that reads and inserts only when it found nothing (an inserted row comes back twice).</summary>
    public string Combined { get; }

    /// <summary><c>INSERT … ON CONFLICT (key) DO NOTHING RETURNING …</c>.</summary>
    public string InsertOnly { get; }
}
