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

/// <summary>The EF Core model over the same tables the ADO.NET tests use (created by each database's DDL).</summary>
public sealed class TestContext(DbContextOptions<TestContext> options) : DbContext(options)
{
    public DbSet<Chat> Chats => Set<Chat>();

    public DbSet<Community> Communities => Set<Community>();

    protected override void OnModelCreating(ModelBuilder modelBuilder)
    {
        modelBuilder.Entity<Chat>(chat =>
        {
            chat.ToTable("chats");
            chat.Property(c => c.Id).HasColumnName("id");
            chat.Property(c => c.ParticipantsKey).HasColumnName("participants_key");
            chat.Property(c => c.Title).HasColumnName("title");
            chat.HasIndex(c => c.ParticipantsKey).IsUnique();
        });
        modelBuilder.Entity<Community>(community =>
        {
            community.ToTable("communities");
            community.Property(c => c.Id).HasColumnName("id");
            community.Property(c => c.Name).HasColumnName("name");
            community.Property(c => c.Slug).HasColumnName("slug");
            community.HasIndex(c => c.Slug).IsUnique();
        });
    }
}
