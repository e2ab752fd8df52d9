using System.Linq.Expressions;
using Idem.DataLayer;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Infrastructure;
using Microsoft.EntityFrameworkCore.Metadata;
using Microsoft.Extensions.Logging;

namespace Idem.EntityFrameworkCore;

/// <summary>
/// Create-or-get by natural key and unique-slug inserts on a <see cref="DbSet{TEntity}"/>, for PostgreSQL (Npgsql) and
/// SQLite. Each runs on the context's own connection and in its current transaction
/// (<see cref="DatabaseFacade.CurrentTransaction"/>), never on a second connection, through EF Core's command pipeline
/// (its logging and interceptors see every statement). The row comes back tracked, as a query result or as
/// <c>SaveChanges</c> leaves an added entity, unless the context does not track queries. A unique violation on the natural key or the slug never reaches
/// the caller (the insert says <c>ON CONFLICT … DO NOTHING</c>, which neither raises nor aborts a PostgreSQL
/// transaction); any other error does, untouched.
/// </summary>
public static class DbSetDataLayerExtensions
{
    /// <summary>
    /// Inserts <paramref name="entity"/> unless a row with the same natural key exists, and returns the one row either
    /// way, with <c>INSERT … ON CONFLICT (key) DO NOTHING RETURNING …</c>. Never check-then-insert, never a table lock:
    /// the unique index decides. A unique index on exactly the key's columns must exist
    /// (<c>HasIndex(e => e.Key).IsUnique()</c>).
    /// </summary>
    /// <remarks>
    /// On PostgreSQL one statement inserts or reads the existing row; one more read only when a concurrent insert of the
    /// key committed while it ran. After 4 consecutive calls for the entity type that found their row, the next sends only
    /// the plain read first; after 4 that created theirs, only the insert; a call that breaks the streak costs one more
    /// statement and sends the next back to the one statement (as Idem.PostgreSql's helper does). On SQLite outside a
    /// transaction a read by the key goes first (an existing row costs a read, not an attempt at SQLite's single write
    /// lock), then the conflict-safe insert, then a read only when that met a row inserted concurrently; after 4
    /// consecutive calls that created their rows the insert goes first. Inside a transaction the insert goes first and
    /// the read follows only on conflict. An existing row is read with the key's values as the entity holds them, before
    /// anything is tracked; the entity is prepared for insertion (its client-side value generation run) only when a row
    /// may have to be inserted.
    /// </remarks>
    /// <typeparam name="TEntity">An entity type mapped to a table.</typeparam>
    /// <param name="set">The set.</param>
    /// <param name="entity">
    /// The row to insert if none exists, an instance the context does not track. Its values are used as they are (with
    /// EF Core's client-side value generation for keys left at their default). When the insert alone created the row,
    /// this instance is the one returned, with the values the database generated (as <c>SaveChanges</c> leaves it);
    /// otherwise the returned instance is read from the database. Use the returned one. Navigations are not inserted:
    /// set foreign keys by their properties.
    /// </param>
    /// <param name="naturalKey">The natural key: <c>e => e.ParticipantsKey</c>, or <c>e => new { e.ProjectId, e.Number }</c>.</param>
    /// <param name="cancellationToken">Cancels the statements.</param>
    /// <returns>The row (tracked unless the query is no-tracking) and whether this call created it.</returns>
    /// <exception cref="ArgumentException">The key expression is not properties of the entity, or a key value is null.</exception>
    /// <exception cref="NotSupportedException">
    /// The provider is neither Npgsql nor SQLite, the entity type has an owned or complex type, or the natural key has
    /// more columns than EF Core's compiled queries take parameters (14).
    /// </exception>
    public static async Task<CreateOrGetResult<TEntity>> CreateOrGetAsync<TEntity>(
        this DbSet<TEntity> set,
        TEntity entity,
        Expression<Func<TEntity, object?>> naturalKey,
        CancellationToken cancellationToken = default)
        where TEntity : class
    {
        ArgumentNullException.ThrowIfNull(set);
        ArgumentNullException.ThrowIfNull(entity);
        ArgumentNullException.ThrowIfNull(naturalKey);
        var mapping = EntityTableMapping.For(set);
        var keyProperties = EntityTableMapping.Properties(mapping.EntityType, naturalKey, nameof(naturalKey));
        var lookup = mapping.Lookup(keyProperties);
        var first = lookup.Streak.First;
        // PostgreSQL: the streak picks the first statement (CreateOrGetStreak). SQLite outside a transaction reads first
        // (see DataLayerCommands: a read is a shared lock, any insert attempt takes the single write lock) unless its
        // recent calls all created their rows; inside a transaction the insert goes first, as a read could pin a
        // snapshot the insert could not upgrade. Every path is conflict-safe: the unique index decides, reads only
        // shortcut.
        var readFirst = mapping.Dialect == SqlDialect.PostgreSql
            ? first == CreateOrGetFirst.Read
            : first != CreateOrGetFirst.Insert && mapping.Context.Database.CurrentTransaction is null;

        // An existing row is read with the key's values taken from the entity as it is: tracking it for a moment to
        // run value generation (below) costs more than the read itself, and is needed only to insert. A key left to value
        // generation (no values yet) is read after it.
        var keyValues = readFirst ? EntityTableMapping.KeyValues(entity, keyProperties) : null;
        if (keyValues is not null && await lookup.ReadAsync<TEntity>(mapping.Context, keyValues, cancellationToken).ConfigureAwait(false) is { } found)
        {
            return Answer(mapping, lookup, found, created: false, conflict: false);
        }

        var row = mapping.Values(entity, exclude: null);
        var keyOrdinals = keyProperties.Select(p => row.IndexOf(p)).ToArray();
        for (var i = 0; i < keyOrdinals.Length; i++)
        {
            if (keyOrdinals[i] < 0 || row.Values[keyOrdinals[i]] is null)
            {
                throw new ArgumentException($"The natural key property '{keyProperties[i].Name}' must have a value: a unique index never matches NULL.", nameof(entity));
            }
        }

        var generatedKey = keyValues is null;
        keyValues ??= [.. keyOrdinals.Select(i => row.Values[i])];
        if (readFirst && generatedKey && await lookup.ReadAsync<TEntity>(mapping.Context, keyValues, cancellationToken).ConfigureAwait(false) is { } generatedFound)
        {
            return Answer(mapping, lookup, generatedFound, created: false, conflict: false);
        }

        var statements = mapping.CreateOrGet(row, keyOrdinals);
        bool conflict;
        if (mapping.Dialect == SqlDialect.PostgreSql && first != CreateOrGetFirst.Insert)
        {
            // One statement: the insert with the read of an existing row (an inserted row comes back twice).
            var rows = await ListAsync(set, statements.Combined, mapping.Parameters(row), 2, cancellationToken).ConfigureAwait(false);
            if (rows.Count > 0)
            {
                var created = rows.Count == 2;
                // After a read that missed, a row found here was inserted concurrently in between.
                return Answer(mapping, lookup, rows[0], created, conflict: !created && readFirst);
            }

            // Nothing: a concurrent insert of the key committed after the statement's snapshot; its row is read below.
            conflict = true;
        }
        else
        {
            if (await mapping.InsertAsync(entity, row, statements.InsertOnly, mapping.Parameters(row), cancellationToken).ConfigureAwait(false))
            {
                return Answer(mapping, lookup, entity, created: true, conflict: false);
            }

            // The insert met a row: inserted concurrently when a read had just missed it; otherwise it is unknown
            // whether it was there before.
            conflict = readFirst;
        }

        var existing = await lookup.ReadAsync<TEntity>(mapping.Context, keyValues, cancellationToken).ConfigureAwait(false)
            ?? throw new InvalidOperationException(
                $"Create-or-get on '{mapping.TableName}' met an existing row but could not read it: it was deleted concurrently, or no unique index covers exactly ({string.Join(", ", lookup.KeyColumns)}).");
        return Answer(mapping, lookup, existing, created: false, conflict);
    }

    /// <summary>Counts the call toward its key's streak, and in the metrics and logs, and answers it.</summary>
    private static CreateOrGetResult<TEntity> Answer<TEntity>(EntityTableMapping mapping, NaturalKeyLookup lookup, TEntity entity, bool created, bool conflict)
    {
        lookup.Streak.Observe(created);
        if (created)
        {
            DataLayerMetrics.Created(mapping.TableName);
        }
        else
        {
            DataLayerMetrics.Found(mapping.TableName);
            if (conflict)
            {
                DataLayerMetrics.ConflictResolved(mapping.TableName, "create_or_get");
                DataLayerLog.ConflictResolved(mapping.Logger, mapping.TableName);
            }
        }

        return new CreateOrGetResult<TEntity>(entity, created);
    }

    /// <summary>
    /// Inserts <paramref name="entity"/> with a unique slug made from <paramref name="name"/> in the property
    /// <paramref name="slug"/> (<c>my-community</c>, then <c>my-community-1</c>, <c>-2</c>…; <c>"Café Zürich"</c> →
    /// <c>cafe-zurich</c>). One statement finds the next free suffix and inserts; the unique index on the slug column
    /// decides. On PostgreSQL a candidate a concurrent insert took sends the statement on to the next one (up to 8 in
    /// one statement); only when all were taken is another statement tried (at most
    /// <see cref="SlugOptions.MaxAttempts"/>, each spreading its candidates wider, so suffixes may skip numbers under
    /// contention). No lock is taken. The row is inserted at once (not at <c>SaveChanges</c>), in the current transaction.
    /// </summary>
    /// <typeparam name="TEntity">An entity type mapped to a table.</typeparam>
    /// <param name="set">The set.</param>
    /// <param name="entity">
    /// The row to insert, an instance the context does not track; its slug property is ignored. It is the instance
    /// returned, with its slug and the values the database generated, as <c>SaveChanges</c> leaves an added entity.
    /// </param>
    /// <param name="slug">The slug property, with a unique index of its own: <c>e => e.Slug</c>.</param>
    /// <param name="name">The name the slug is made from.</param>
    /// <param name="options">Maximum length, attempts and fallback; <see cref="SlugOptions.Default"/> when <see langword="null"/>.</param>
    /// <param name="cancellationToken">Cancels the statements.</param>
    /// <returns>The inserted row, with its slug, tracked unless the query is no-tracking.</returns>
    /// <exception cref="ArgumentException">The name has no letters or digits and no <see cref="SlugOptions.Fallback"/> is set.</exception>
    /// <exception cref="SlugAllocationException">Every attempt met a concurrent insert; nothing was inserted.</exception>
    /// <exception cref="NotSupportedException">The provider is neither Npgsql nor SQLite.</exception>
    public static async Task<TEntity> InsertWithUniqueSlugAsync<TEntity>(
        this DbSet<TEntity> set,
        TEntity entity,
        Expression<Func<TEntity, string?>> slug,
        string name,
        SlugOptions? options = null,
        CancellationToken cancellationToken = default)
        where TEntity : class
    {
        ArgumentNullException.ThrowIfNull(set);
        ArgumentNullException.ThrowIfNull(entity);
        ArgumentNullException.ThrowIfNull(slug);
        options ??= SlugOptions.Default;
        var baseSlug = Slug.FromName(name, options);
        var mapping = EntityTableMapping.For(set);
        var slugProperty = EntityTableMapping.Properties(mapping.EntityType, slug, nameof(slug)) is [var single]
            ? single
            : throw new ArgumentException("The slug is one string property: e => e.Slug.", nameof(slug));
        var row = mapping.Values(entity, exclude: slugProperty);
        var slugColumn = mapping.Column(slugProperty);
        var sql = DataLayerSql.InsertWithSlug(mapping.Dialect, mapping.Table, slugColumn, row.Columns, mapping.AllColumns);
        var pattern = DataLayerSql.SlugPattern(mapping.Dialect, baseSlug, options.MaxLength);
        for (var attempt = 0; attempt < options.MaxAttempts; attempt++)
        {
            DataLayerMetrics.SlugAttempt(mapping.TableName);
            var parameters = mapping.Parameters(row);
            parameters.Add(mapping.Parameter(DataLayerSql.BaseParameter, baseSlug));
            parameters.Add(mapping.Parameter(DataLayerSql.MaxLengthParameter, options.MaxLength));
            parameters.Add(mapping.Parameter(DataLayerSql.PatternParameter, pattern));
            parameters.Add(mapping.Parameter(DataLayerSql.OffsetParameter, DataLayerSql.SlugOffset(attempt)));
            if (await mapping.InsertAsync(entity, row, sql, parameters, cancellationToken).ConfigureAwait(false))
            {
                DataLayerMetrics.Created(mapping.TableName);
                return entity;
            }

            DataLayerMetrics.ConflictResolved(mapping.TableName, "slug");
            DataLayerLog.SlugTaken(mapping.Logger, mapping.TableName, baseSlug, attempt + 1);
        }

        DataLayerLog.SlugExhausted(mapping.Logger, mapping.TableName, baseSlug, options.MaxAttempts);
        throw new SlugAllocationException(baseSlug, options.MaxAttempts);
    }

    private static async Task<List<TEntity>> ListAsync<TEntity>(DbSet<TEntity> set, string sql, List<object> parameters, int max, CancellationToken cancellationToken)
        where TEntity : class
    {
        var rows = new List<TEntity>(max);
        await foreach (var entity in set.FromSqlRaw(sql, [.. parameters]).IgnoreQueryFilters().AsAsyncEnumerable().WithCancellation(cancellationToken).ConfigureAwait(false))
        {
            rows.Add(entity);
            if (rows.Count == max)
            {
                break;
            }
        }

        return rows;
    }
}
