using System.Collections.Concurrent;
using System.Data.Common;
using System.Diagnostics.Metrics;
using System.Text.RegularExpressions;
using Idem.EntityFrameworkCore;
using Idem.TestUtils;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Logging;
using Xunit;
using Xunit.Abstractions;

namespace Idem.DataLayer.Tests;

/// <summary>
/// Issue 19, items 1 and 2, on a real database under real concurrency: each proof runs the helper and, in the same test,
/// the naive code it replaces, which must show the duplicate or the error (so the test can fail).
/// </summary>
public abstract class DataLayerTests(ITestOutputHelper output) : IAsyncLifetime
{
    protected static readonly CreateOrGetDefinition Chats = new("chats", columns: ["participants_key", "title"], keyColumns: ["participants_key"], returning: ["id"]);

    /// <summary>The work a naive handler does between its check and its insert (the window the incidents raced in).</summary>
    protected static readonly TimeSpan NaiveWork = TimeSpan.FromMilliseconds(10);

    protected ITestOutputHelper Output { get; } = output;

    /// <summary>Receives the slug definitions' logs.</summary>
    protected ListLogger SlugLogger { get; } = new();

    public abstract Task InitializeAsync();

    public virtual Task DisposeAsync() => Task.CompletedTask;

    /// <summary>A new open connection to the test database.</summary>
    protected abstract Task<DbConnection> OpenAsync();

    protected abstract TestContext NewContext();

    protected abstract HiddenChatsContext NewHiddenChatsContext();

    protected abstract Task<CreateOrGetResult<long>> CreateOrGetChatAsync(DbConnection connection, DbTransaction? transaction, string key, string? title = null);

    protected abstract Task<(long Id, string Slug)> InsertCommunityAsync(DbConnection connection, DbTransaction? transaction, string name, SlugOptions options);

    protected abstract bool IsUniqueViolation(Exception exception);

    /// <summary>The provider's error for a CHECK violation: it must reach the caller as it was raised.</summary>
    protected abstract void AssertCheckViolation(Exception exception);

    [Fact]
    public async Task CreateOrGet_150_concurrent_calls_for_the_same_two_participants_return_one_id_and_one_row()
    {
        using var counters = new DataCounters("chats");
        var answers = await RaceAsync(150, async (connection, i) =>
            await CreateOrGetChatAsync(connection, null, NaturalKey.FromSet(Shuffled(["alice", "bob"], i))));

        Assert.True(answers.Errors.IsEmpty, string.Join("\n", answers.Errors));
        Assert.Single(answers.Values.Select(a => a.Value).Distinct());
        Assert.Single(answers.Values, a => a.Created);
        Assert.Equal(1L, await CountAsync("SELECT count(*) FROM chats WHERE participants_key = 'alice,bob'"));
        Assert.Equal(1, counters.Created);
        Assert.Equal(149, counters.Found);
        Output.WriteLine($"helper: 150 answers, 1 id, 1 row, 0 errors; conflicts resolved after a concurrent insert: {counters.Conflicts}");

        // The naive variant: check, then insert. The same race gives unique violations (a 500 in an API).
        var naive = await RaceAsync(150, async (connection, i) =>
        {
            var key = NaturalKey.FromSet(Shuffled(["carol", "dave"], i));
            var existing = await ScalarAsync(connection, "SELECT id FROM chats WHERE participants_key = @key", key);
            await Task.Delay(NaiveWork); // what a handler does between its check and its insert
            return existing is long id ? id : (long)(await ScalarAsync(connection, "INSERT INTO chats (participants_key) VALUES (@key) RETURNING id", key))!;
        });
        Output.WriteLine($"naive check-then-insert: {naive.Errors.Count} errors of 150");
        Assert.NotEmpty(naive.Errors);
        Assert.All(naive.Errors, e => Assert.True(IsUniqueViolation(e), e.ToString()));
    }

    [Fact]
    public async Task CreateOrGet_through_EF_Core_hands_back_a_created_row_with_the_values_the_database_generated_tracked_as_after_SaveChanges()
    {
        // Eight new rows: past the streak's threshold, so every first statement is exercised (on PostgreSQL the combined
        // statement, then the insert alone; on SQLite the insert after a read, then the insert first).
        var before = DateTime.UtcNow.AddMinutes(-1);
        var ids = new Dictionary<string, long>();
        await using (var db = NewContext())
        {
            for (var i = 0; i < 8; i++)
            {
                var result = await db.Notes.CreateOrGetAsync(new Note { Ref = "note-" + i }, n => n.Ref);
                var note = result.Value;
                Assert.True(result.Created);
                Assert.True(note.Id > 0, $"call {i}: the identity the database gave, got {note.Id}");
                Assert.Equal(NoteStatus.Draft, note.Status); // the column's default 'Draft', through the value converter
                Assert.InRange(note.CreatedAt, before, DateTime.UtcNow.AddMinutes(1));
                Assert.Equal(EntityState.Unchanged, db.Entry(note).State);
                ids[note.Ref] = note.Id;
                note.Status = NoteStatus.Published;
            }

            // Tracked with their keys and the database's values as original values: SaveChanges updates exactly the
            // eight rows, and only the changed column.
            Assert.Equal(8, await db.SaveChangesAsync());
        }

        Assert.Equal(8, ids.Values.Distinct().Count());
        await using (var db = NewContext())
        {
            foreach (var (reference, id) in ids)
            {
                var again = await db.Notes.CreateOrGetAsync(new Note { Ref = reference }, n => n.Ref);
                Assert.False(again.Created);
                Assert.Equal(id, again.Value.Id);
                Assert.Equal(NoteStatus.Published, again.Value.Status);
            }
        }

        // A context that does not track queries hands back the created row untracked, with the same values.
        await using (var db = NewContext())
        {
            db.ChangeTracker.QueryTrackingBehavior = QueryTrackingBehavior.NoTracking;
            for (var i = 0; i < 6; i++)
            {
                var result = await db.Notes.CreateOrGetAsync(new Note { Ref = "untracked-" + i }, n => n.Ref);
                Assert.True(result.Created);
                Assert.True(result.Value.Id > 0);
                Assert.Equal(NoteStatus.Draft, result.Value.Status);
                Assert.Equal(EntityState.Detached, db.Entry(result.Value).State);
            }

            // An existing row is read untracked too (the read is compiled once per tracking behaviour).
            var existing = await db.Notes.CreateOrGetAsync(new Note { Ref = "note-0" }, n => n.Ref);
            Assert.False(existing.Created);
            Assert.Equal(ids["note-0"], existing.Value.Id);
            Assert.Equal(EntityState.Detached, db.Entry(existing.Value).State);
        }
    }

    [Fact]
    public async Task CreateOrGet_through_EF_Core_150_concurrent_calls_return_one_id_and_one_row()
    {
        var answers = await RaceContextsAsync(150, async (db, i) =>
        {
            var result = await db.Chats.CreateOrGetAsync(new Chat { ParticipantsKey = NaturalKey.FromSet(Shuffled(["erin", "frank"], i)) }, c => c.ParticipantsKey);
            Assert.Equal(EntityState.Unchanged, db.Entry(result.Value).State);
            return (result.Value.Id, result.Created);
        });

        Assert.True(answers.Errors.IsEmpty, string.Join("\n", answers.Errors));
        Assert.Single(answers.Values.Select(a => a.Id).Distinct());
        Assert.Single(answers.Values, a => a.Created);
        Assert.Equal(1L, await CountAsync("SELECT count(*) FROM chats WHERE participants_key = 'erin,frank'"));

        // The naive EF Core variant: FirstOrDefaultAsync, then Add + SaveChangesAsync.
        var naive = await RaceContextsAsync(150, async (db, i) =>
        {
            var key = NaturalKey.FromSet(Shuffled(["grace", "heidi"], i));
            var chat = await db.Chats.FirstOrDefaultAsync(c => c.ParticipantsKey == key);
            if (chat is null)
            {
                await Task.Delay(NaiveWork);
                chat = new Chat { ParticipantsKey = key };
                db.Chats.Add(chat);
                await db.SaveChangesAsync();
            }

            return (chat.Id, false);
        });
        Output.WriteLine($"naive EF Core FirstOrDefault + SaveChanges: {naive.Errors.Count} errors of 150");
        Assert.NotEmpty(naive.Errors);
        Assert.All(naive.Errors, e => Assert.True(e is DbUpdateException && IsUniqueViolation(e), e.ToString()));
    }

    [Theory]
    [InlineData("combined")]
    [InlineData("read")]
    [InlineData("insert")]
    public async Task CreateOrGet_through_EF_Core_150_concurrent_calls_from_each_first_statement_return_one_id_and_one_row(string first)
    {
        // The streak of the chats' key decides the first statement (PostgreSQL: the combined one, the read, the insert;
        // SQLite outside a transaction: the read, the read, the insert): primed to each, then raced on a new key.
        await PrimeChatStreakAsync(first);
        var key = "race-from-" + first;
        var answers = await RaceContextsAsync(150, async (db, _) =>
        {
            var result = await db.Chats.CreateOrGetAsync(new Chat { ParticipantsKey = key }, c => c.ParticipantsKey);
            return (result.Value.Id, result.Created);
        });

        Assert.True(answers.Errors.IsEmpty, string.Join("\n", answers.Errors));
        Assert.Single(answers.Values.Select(a => a.Id).Distinct());
        Assert.Single(answers.Values, a => a.Created);
        Assert.Equal(1L, await CountAsync($"SELECT count(*) FROM chats WHERE participants_key = '{key}'"));
    }

    /// <summary>Four calls that create their rows, then none ("insert"), one ("combined") or four ("read") that find theirs.</summary>
    private async Task PrimeChatStreakAsync(string first)
    {
        await using var db = NewContext();
        for (var i = 0; i < 4; i++)
        {
            Assert.True((await db.Chats.CreateOrGetAsync(new Chat { ParticipantsKey = $"prime-{first}-{i}" }, c => c.ParticipantsKey)).Created);
        }

        for (var i = 0; i < (first == "read" ? 4 : first == "combined" ? 1 : 0); i++)
        {
            Assert.False((await db.Chats.CreateOrGetAsync(new Chat { ParticipantsKey = $"prime-{first}-{i}" }, c => c.ParticipantsKey)).Created);
        }
    }

    [Fact]
    public async Task Slugs_for_100_concurrent_creates_of_one_name_are_100_distinct()
    {
        using var counters = new DataCounters("communities");
        var answers = await RaceAsync(100, (connection, _) => InsertCommunityAsync(connection, null, "My Community", SlugOptions.Default));

        Assert.True(answers.Errors.IsEmpty, string.Join("\n", answers.Errors));
        var slugs = answers.Values.Select(a => a.Slug).ToArray();
        Assert.Equal(100, slugs.Distinct().Count());
        Assert.Contains("my-community", slugs);
        Assert.All(slugs, s => Assert.Matches("^my-community(-[1-9][0-9]*)?$", s));
        Assert.Equal(100L, await CountAsync("SELECT count(*) FROM communities"));
        Assert.Equal(100, counters.Created);
        Output.WriteLine($"helper: 100 distinct slugs, 0 errors, {counters.SlugAttempts} statements ({counters.SlugAttempts / 100.0:0.00} per create)");
        Assert.Equal(100 + counters.Conflicts, counters.SlugAttempts);

        // Each taken candidate is logged once, at Debug: a resolved conflict is not an error.
        Assert.Equal(counters.Conflicts, SlugLogger.Entries.Count);
        Assert.All(SlugLogger.Entries, e => Assert.Equal((LogLevel.Debug, 6002), (e.Level, e.EventId.Id)));

        // The naive variant: while exists(slug) slug++, then insert.
        var naive = await RaceAsync(100, async (connection, _) =>
        {
            var slug = "our-club";
            for (var n = 1; await ScalarAsync(connection, "SELECT id FROM communities WHERE slug = @key", slug) is not null; n++)
            {
                slug = "our-club-" + n;
            }

            await Task.Delay(NaiveWork);

            await ScalarAsync(connection, "INSERT INTO communities (name, slug) VALUES ('Our Club', @key) RETURNING id", slug);
            return slug;
        });
        Output.WriteLine($"naive while-exists-increment: {naive.Errors.Count} errors of 100");
        Assert.NotEmpty(naive.Errors);
        Assert.All(naive.Errors, e => Assert.True(IsUniqueViolation(e), e.ToString()));
    }

    [Fact]
    public async Task Slugs_through_EF_Core_for_100_concurrent_creates_of_one_name_are_100_distinct()
    {
        var answers = await RaceContextsAsync(100, async (db, _) =>
        {
            var community = await db.Communities.InsertWithUniqueSlugAsync(new Community { Name = "Café Zürich" }, c => c.Slug, "Café Zürich");
            return (community.Id, community.Slug);
        });

        Assert.True(answers.Errors.IsEmpty, string.Join("\n", answers.Errors));
        Assert.Equal(100, answers.Values.Select(a => a.Slug).Distinct().Count());
        Assert.Contains("cafe-zurich", answers.Values.Select(a => a.Slug));
        Assert.All(answers.Values, a => Assert.Matches("^cafe-zurich(-[1-9][0-9]*)?$", a.Slug));
        Assert.Equal(100L, await CountAsync("SELECT count(*) FROM communities WHERE name = 'Café Zürich'"));
    }

    [Fact]
    public async Task Sequential_slugs_count_up_and_a_maximum_length_never_cuts_the_suffix()
    {
        await using var connection = await OpenAsync();
        var options = new SlugOptions { MaxLength = 10 };
        var slugs = new List<string>();
        for (var i = 0; i < 12; i++)
        {
            slugs.Add((await InsertCommunityAsync(connection, null, "Abcdefghij klmnop", options)).Slug);
        }

        Assert.Equal(["abcdefghij", "abcdefgh-1", "abcdefgh-2", "abcdefgh-3", "abcdefgh-4", "abcdefgh-5", "abcdefgh-6", "abcdefgh-7", "abcdefgh-8", "abcdefgh-9", "abcdefg-10", "abcdefg-11"], slugs);

        // Another name whose slug begins the same is counted apart; a name without letters is refused, nothing inserted.
        Assert.Equal("abcdefg", (await InsertCommunityAsync(connection, null, "abcdefg", options)).Slug);
        await Assert.ThrowsAsync<ArgumentException>(() => InsertCommunityAsync(connection, null, "!!!", options));
        Assert.Equal(13L, await CountAsync("SELECT count(*) FROM communities"));
    }

    [Fact]
    public async Task Helpers_run_in_the_callers_transaction_and_roll_back_with_it()
    {
        await using (var connection = await OpenAsync())
        {
            await using var transaction = await connection.BeginTransactionAsync();
            Assert.True((await CreateOrGetChatAsync(connection, transaction, "ivan,judy")).Created);
            Assert.False((await CreateOrGetChatAsync(connection, transaction, "ivan,judy")).Created);
            await InsertCommunityAsync(connection, transaction, "Rolled back", SlugOptions.Default);
            await transaction.RollbackAsync();
        }

        await using (var db = NewContext())
        {
            await using var transaction = await db.Database.BeginTransactionAsync();
            Assert.True((await db.Chats.CreateOrGetAsync(new Chat { ParticipantsKey = "ivan,judy" }, c => c.ParticipantsKey)).Created);
            await db.Communities.InsertWithUniqueSlugAsync(new Community { Name = "x" }, c => c.Slug, "Rolled back");
            await transaction.RollbackAsync();
        }

        Assert.Equal(0L, await CountAsync("SELECT count(*) FROM chats"));
        Assert.Equal(0L, await CountAsync("SELECT count(*) FROM communities"));
    }

    [Fact]
    public async Task Another_constraints_violation_reaches_the_caller_untouched()
    {
        await using var connection = await OpenAsync();
        var error = await Assert.ThrowsAnyAsync<DbException>(() => CreateOrGetChatAsync(connection, null, "kim,lee", title: "forbidden"));
        AssertCheckViolation(error);
        Assert.False(IsUniqueViolation(error));

        await using var db = NewContext();
        var efError = await Assert.ThrowsAnyAsync<DbException>(() => db.Chats.CreateOrGetAsync(new Chat { ParticipantsKey = "kim,lee", Title = "forbidden" }, c => c.ParticipantsKey));
        AssertCheckViolation(efError);
        Assert.Equal(0L, await CountAsync("SELECT count(*) FROM chats"));
    }

    [Fact]
    public async Task A_value_converted_natural_key_is_written_and_matched_through_its_converter()
    {
        var answers = await RaceContextsAsync(30, async (db, _) =>
        {
            var result = await db.Tags.CreateOrGetAsync(new Tag { Name = new TagName("dotnet") }, t => t.Name);
            Assert.Equal(new TagName("dotnet"), result.Value.Name); // read back through the converter
            return (result.Value.Id, result.Created);
        });

        Assert.True(answers.Errors.IsEmpty, string.Join("\n", answers.Errors));
        Assert.Single(answers.Values.Select(a => a.Id).Distinct());
        Assert.Single(answers.Values, a => a.Created);
        // The key went through the converter on the way in (the column holds the provider value) and matched on the way back.
        Assert.Equal(1L, await CountAsync("SELECT count(*) FROM tags WHERE name = 'tag:dotnet'"));
        Assert.Equal(1L, await CountAsync("SELECT count(*) FROM tags"));
    }

    [Fact]
    public async Task Through_EF_Core_a_row_a_query_filter_hides_is_still_found_by_its_key()
    {
        // The unique index sees every row, filtered or not: the read by key must too, or the insert meets the hidden row
        // and the call fails instead of answering it. Ten calls, so the read goes first (after a streak of found rows)
        // and the insert goes first (before it).
        await using var connection = await OpenAsync();
        var hiddenId = (await CreateOrGetChatAsync(connection, null, "hidden,chat", title: "hidden")).Value;
        await using var db = NewHiddenChatsContext();
        for (var i = 0; i < 10; i++)
        {
            var result = await db.Chats.CreateOrGetAsync(new Chat { ParticipantsKey = "hidden,chat", Title = "visible" }, c => c.ParticipantsKey);
            Assert.False(result.Created);
            Assert.Equal(hiddenId, result.Value.Id);
        }

        // What the filter does to a plain query by the same key: nothing found.
        Assert.Null(await db.Chats.FirstOrDefaultAsync(c => c.ParticipantsKey == "hidden,chat"));
        Assert.Equal(1L, await CountAsync("SELECT count(*) FROM chats WHERE participants_key = 'hidden,chat'"));
    }

    [Fact]
    public async Task Through_EF_Core_a_composite_natural_key_with_an_enum_finds_its_row_by_every_path()
    {
        // Ten calls per key: the combined statement or the insert first, then (after a streak of found rows) the read by
        // key first, whose predicate compares the enum as the C# compiler does (on its underlying type).
        await using var db = NewContext();
        foreach (var (kind, number) in new[] { (TicketKind.Bug, 7), (TicketKind.Feature, 7), (TicketKind.Bug, 8) })
        {
            var first = await db.Tickets.CreateOrGetAsync(new Ticket { Kind = kind, Number = number }, t => new { t.Kind, t.Number });
            Assert.True(first.Created);
            for (var i = 0; i < 10; i++)
            {
                var again = await db.Tickets.CreateOrGetAsync(new Ticket { Kind = kind, Number = number }, t => new { t.Kind, t.Number });
                Assert.False(again.Created);
                Assert.Equal(first.Value.Id, again.Value.Id);
                Assert.Equal((kind, number), (again.Value.Kind, again.Value.Number));
            }
        }

        Assert.Equal(3L, await CountAsync("SELECT count(*) FROM tickets"));
        Assert.Equal(2L, await CountAsync("SELECT count(*) FROM tickets WHERE number = 7"));
    }

    [Fact]
    public async Task An_entity_with_an_owned_type_is_refused_with_a_clear_error_and_nothing_is_written()
    {
        await using var db = NewContext();
        var error = await Assert.ThrowsAsync<NotSupportedException>(() =>
            db.Shipments.CreateOrGetAsync(new Shipment { Reference = "S-1", Destination = new Address { City = "Lyon" } }, s => s.Reference));
        Assert.Contains("Destination", error.Message, StringComparison.Ordinal);
        Assert.Contains("owned", error.Message, StringComparison.Ordinal);
        Assert.Equal(0L, await CountAsync("SELECT count(*) FROM shipments"));
    }

    protected static string[] Shuffled(string[] members, int seed)
    {
        var copy = members.ToArray();
        new Random(seed).Shuffle(copy);
        return copy;
    }

    protected async Task<long> CountAsync(string sql)
    {
        await using var connection = await OpenAsync();
        return Convert.ToInt64(await ScalarAsync(connection, sql, null));
    }

    protected static Task<object?> ScalarAsync(DbConnection connection, string sql, object? key) =>
        DbCommands.ScalarAsync(connection, null, sql, key);

    /// <summary>Runs <paramref name="count"/> calls at once, each on its own open connection, released together.</summary>
    protected async Task<RaceResult<T>> RaceAsync<T>(int count, Func<DbConnection, int, Task<T>> call)
    {
        var connections = new DbConnection[count];
        for (var i = 0; i < count; i++)
        {
            connections[i] = await OpenAsync();
        }

        try
        {
            var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var result = new RaceResult<T>();
            var tasks = Enumerable.Range(0, count).Select(i => Task.Run(async () =>
            {
                await gate.Task;
                try
                {
                    result.Values.Add(await call(connections[i], i));
                }
                catch (Exception e) when (e is DbException or DbUpdateException)
                {
                    result.Errors.Add(e);
                }
            })).ToArray();
            gate.SetResult();
            await Task.WhenAll(tasks).WaitAsync(TimeSpan.FromMinutes(2));
            return result;
        }
        finally
        {
            foreach (var connection in connections)
            {
                await connection.DisposeAsync();
            }
        }
    }

    /// <summary>Runs <paramref name="count"/> calls at once, each with its own DbContext (its connection opened first).</summary>
    protected async Task<RaceResult<T>> RaceContextsAsync<T>(int count, Func<TestContext, int, Task<T>> call)
    {
        var contexts = new TestContext[count];
        for (var i = 0; i < count; i++)
        {
            contexts[i] = NewContext();
            await contexts[i].Database.OpenConnectionAsync();
        }

        try
        {
            var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var result = new RaceResult<T>();
            var tasks = Enumerable.Range(0, count).Select(i => Task.Run(async () =>
            {
                await gate.Task;
                try
                {
                    result.Values.Add(await call(contexts[i], i));
                }
                catch (Exception e) when (e is DbException or DbUpdateException)
                {
                    result.Errors.Add(e);
                }
            })).ToArray();
            gate.SetResult();
            await Task.WhenAll(tasks).WaitAsync(TimeSpan.FromMinutes(2));
            return result;
        }
        finally
        {
            foreach (var context in contexts)
            {
                await context.DisposeAsync();
            }
        }
    }

    protected sealed class RaceResult<T>
    {
        public ConcurrentBag<T> Values { get; } = [];

        public ConcurrentBag<Exception> Errors { get; } = [];
    }
}

/// <summary>Counts the data layer's instruments in the Idem meter for one table.</summary>
public sealed class DataCounters : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly string _table;
    private int _created;
    private int _found;
    private int _conflicts;
    private int _slugAttempts;

    public DataCounters(string table)
    {
        _table = table;
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == IdempotencyMetrics.MeterName && instrument.Name.StartsWith("idem.data.", StringComparison.Ordinal))
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            string? table = null;
            foreach (var tag in tags)
            {
                if (tag.Key == DataLayerMetrics.TableTag)
                {
                    table = tag.Value as string;
                }
            }

            if (table != _table)
            {
                return;
            }

            switch (instrument.Name)
            {
                case "idem.data.created": Interlocked.Add(ref _created, (int)value); break;
                case "idem.data.found": Interlocked.Add(ref _found, (int)value); break;
                case "idem.data.conflicts": Interlocked.Add(ref _conflicts, (int)value); break;
                case "idem.data.slug_attempts": Interlocked.Add(ref _slugAttempts, (int)value); break;
            }
        });
        _listener.Start();
    }

    public int Created => Volatile.Read(ref _created);

    public int Found => Volatile.Read(ref _found);

    public int Conflicts => Volatile.Read(ref _conflicts);

    public int SlugAttempts => Volatile.Read(ref _slugAttempts);

    public void Dispose() => _listener.Dispose();
}

/// <summary>A logger that keeps every entry.</summary>
public sealed class ListLogger : ILogger
{
    public ConcurrentQueue<(LogLevel Level, EventId EventId, string Message)> Entries { get; } = new();

    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
        Entries.Enqueue((logLevel, eventId, formatter(state, exception)));
}
