using Microsoft.EntityFrameworkCore;

namespace Idem.DataLayer.Tests;

public sealed class Chat
{
    public long Id { get; set; }

    public string ParticipantsKey { get; set; } = "";

    public string? Title { get; set; }
}

public sealed class Community
{
    public long Id { get; set; }

    public string Name { get; set; } = "";

    public string Slug { get; set; } = "";
}

/// <summary>A natural key stored through a value converter (as <c>tag:&lt;value&gt;</c>).</summary>
public readonly record struct TagName(string Value);

public sealed class Tag
{
    public long Id { get; set; }

    public TagName Name { get; set; }
}

public enum TicketKind
{
    Bug = 1,
    Feature = 2,
}

/// <summary>A composite natural key with an enum: (kind, number).</summary>
public sealed class Ticket
{
    public long Id { get; set; }

    public TicketKind Kind { get; set; }

    public int Number { get; set; }
}

public enum NoteStatus
{
    Unset = 0,
    Draft = 1,
    Published = 2,
}

/// <summary>A row whose id, status (stored as text through a value converter) and creation time are the database's defaults.</summary>
public sealed class Note
{
    public long Id { get; set; }

    public string Ref { get; set; } = "";

    public NoteStatus Status { get; set; }

    public DateTime CreatedAt { get; set; }
}

public sealed class Shipment
{
    public long Id { get; set; }

    public string Reference { get; set; } = "";

    public Address Destination { get; set; } = new();
}

public sealed class Address
{
    public string City { get; set; } = "";
}

/// <summary>The EF Core model over the same tables the ADO.NET tests use (created by each database's DDL).</summary>
public sealed class TestContext(DbContextOptions<TestContext> options) : DbContext(options)
{
    public DbSet<Chat> Chats => Set<Chat>();

    public DbSet<Community> Communities => Set<Community>();

    public DbSet<Tag> Tags => Set<Tag>();

    public DbSet<Shipment> Shipments => Set<Shipment>();

    public DbSet<Ticket> Tickets => Set<Ticket>();

    public DbSet<Note> Notes => Set<Note>();

    protected override void OnModelCreating(ModelBuilder modelBuilder)
    {
        modelBuilder.Entity<Chat>(MapChats);
        modelBuilder.Entity<Community>(community =>
        {
            community.ToTable("communities");
            community.Property(c => c.Id).HasColumnName("id");
            community.Property(c => c.Name).HasColumnName("name");
            community.Property(c => c.Slug).HasColumnName("slug");
            community.HasIndex(c => c.Slug).IsUnique();
        });
        modelBuilder.Entity<Tag>(tag =>
        {
            tag.ToTable("tags");
            tag.Property(t => t.Id).HasColumnName("id");
            tag.Property(t => t.Name).HasColumnName("name").HasConversion(n => "tag:" + n.Value, stored => new TagName(stored.Substring(4)));
            tag.HasIndex(t => t.Name).IsUnique();
        });
        modelBuilder.Entity<Ticket>(ticket =>
        {
            ticket.ToTable("tickets");
            ticket.Property(t => t.Id).HasColumnName("id");
            ticket.Property(t => t.Kind).HasColumnName("kind");
            ticket.Property(t => t.Number).HasColumnName("number");
            ticket.HasIndex(t => new { t.Kind, t.Number }).IsUnique();
        });
        modelBuilder.Entity<Note>(note =>
        {
            note.ToTable("notes");
            note.Property(n => n.Id).HasColumnName("id");
            note.Property(n => n.Ref).HasColumnName("ref");
            // The columns' defaults are in each database's DDL; the model only says the database fills them.
            note.Property(n => n.Status).HasColumnName("status").HasConversion<string>().ValueGeneratedOnAdd();
            note.Property(n => n.CreatedAt).HasColumnName("created_at").ValueGeneratedOnAdd();
            note.HasIndex(n => n.Ref).IsUnique();
        });
        modelBuilder.Entity<Shipment>(shipment =>
        {
            shipment.ToTable("shipments");
            shipment.Property(s => s.Id).HasColumnName("id");
            shipment.Property(s => s.Reference).HasColumnName("reference");
            shipment.HasIndex(s => s.Reference).IsUnique();
            shipment.OwnsOne(s => s.Destination, d => d.Property(a => a.City).HasColumnName("destination_city"));
        });
    }

    internal static void MapChats(Microsoft.EntityFrameworkCore.Metadata.Builders.EntityTypeBuilder<Chat> chat)
    {
        chat.ToTable("chats");
        chat.Property(c => c.Id).HasColumnName("id");
        chat.Property(c => c.ParticipantsKey).HasColumnName("participants_key");
        chat.Property(c => c.Title).HasColumnName("title");
        chat.HasIndex(c => c.ParticipantsKey).IsUnique();
    }
}

/// <summary>
/// The chats table under a query filter that hides chats titled "hidden" (a soft delete, a tenant filter): a context of
/// its own type, so its model (and Idem's streaks) are its own.
/// </summary>
public sealed class HiddenChatsContext(DbContextOptions<HiddenChatsContext> options) : DbContext(options)
{
    public DbSet<Chat> Chats => Set<Chat>();

    protected override void OnModelCreating(ModelBuilder modelBuilder) =>
        modelBuilder.Entity<Chat>(chat =>
        {
            TestContext.MapChats(chat);
            chat.HasQueryFilter(c => c.Title != "hidden");
        });
}
