using Microsoft.Playwright;
using static Microsoft.Playwright.Assertions;

namespace Idem.Demo.BrowserTests;

/// <summary>
/// The demo page in headless Chromium: every misbehaving action ends with exactly one new row, checked through
/// GET /stats and on the page; the guard is visible while a submission is in flight. The tests of one class run one
/// after another, so row counts taken before and after an action are that action's.
/// </summary>
[Collection(DemoServerGroup.Name)]
public sealed class DemoPageTests(DemoFixture demo)
{
    private static readonly LocatorAssertionsToContainTextOptions Slow = new() { Timeout = 30_000 };
    private static readonly LocatorAssertionsToHaveTextOptions SlowText = new() { Timeout = 30_000 };

    private const string Form = "form#create-community";
    private const string Submit = "form#create-community button[type=submit]";

    [Fact]
    public async Task Double_click_on_submit_creates_one_community_and_the_button_is_disabled_while_in_flight()
    {
        var (context, page) = await demo.OpenAsync();
        await using var _ = context;
        var before = await demo.StatAsync("communities");
        await page.FillAsync($"{Form} input[name=name]", Unique("Double click"));
        await page.Locator($"{Form} input[name=delayMs]").EvaluateAsync("e => e.value = '1500'");

        await page.DblClickAsync(Submit);

        await Expect(page.Locator(Submit)).ToBeDisabledAsync();
        await Expect(page.Locator(Form)).ToHaveAttributeAsync("aria-busy", "true");
        await Expect(page.Locator("#community-result")).ToContainTextAsync("Created", Slow);
        await Expect(page.Locator(Submit)).ToBeEnabledAsync();
        await Expect(page.Locator(Form)).ToHaveAttributeAsync("aria-busy", "false");
        await ExpectOneMoreRow(page, "communities", before);
        await Expect(page.Locator("#client-requests")).ToHaveTextAsync("1");
    }

    [Fact]
    public async Task Two_submits_in_one_instant_send_one_request_and_count_the_ignored_one()
    {
        var (context, page) = await demo.OpenAsync();
        await using var _ = context;
        var before = await demo.StatAsync("communities");
        await page.FillAsync($"{Form} input[name=name]", Unique("Same instant"));

        await page.ClickAsync("#misbehave-double");

        await Expect(page.Locator(Submit)).ToBeDisabledAsync();
        await Expect(page.Locator("#community-result")).ToContainTextAsync("Created", Slow);
        await ExpectOneMoreRow(page, "communities", before);
        await Expect(page.Locator("#client-requests")).ToHaveTextAsync("1");
        await Expect(page.Locator("#client-ignored")).ToHaveTextAsync("1");
    }

    [Fact]
    public async Task A_second_tab_submitting_the_same_community_joins_the_first_tabs_key()
    {
        var (context, page) = await demo.OpenAsync();
        await using var _ = context;
        var before = await demo.StatAsync("communities");
        await page.FillAsync($"{Form} input[name=name]", Unique("Two tabs"));

        var popup = await page.RunAndWaitForPopupAsync(() => page.ClickAsync("#misbehave-tab"));

        await Expect(page.Locator("#community-result")).ToContainTextAsync("Created", Slow);
        await Expect(popup.Locator("#community-result")).ToContainTextAsync("Created", Slow);
        await Expect(popup.Locator("#community-result")).ToContainTextAsync("joined from another tab");
        await ExpectOneMoreRow(page, "communities", before);
        await Expect(popup.Locator("#client-requests")).ToHaveTextAsync("0");
    }

    [Fact]
    public async Task Two_tabs_opened_by_hand_submitting_the_same_name_create_one_community()
    {
        var (context, first) = await demo.OpenAsync();
        await using var _ = context;
        var second = await context.NewPageAsync();
        await second.GotoAsync("/");
        var before = await demo.StatAsync("communities");
        var name = Unique("By hand");
        foreach (var page in new[] { first, second })
        {
            await page.FillAsync($"{Form} input[name=name]", name);
            await page.Locator($"{Form} input[name=delayMs]").EvaluateAsync("e => e.value = '1500'");
        }

        await first.ClickAsync(Submit);
        await second.ClickAsync(Submit);

        await Expect(first.Locator("#community-result")).ToContainTextAsync("Created", Slow);
        await Expect(second.Locator("#community-result")).ToContainTextAsync("Created", Slow);
        await ExpectOneMoreRow(first, "communities", before);
    }

    [Fact]
    public async Task A_tab_opened_just_after_the_first_tabs_success_gets_that_result_without_a_request()
    {
        var (context, first) = await demo.OpenAsync();
        await using var _ = context;
        var before = await demo.StatAsync("communities");
        var name = Unique("Just after");
        await first.FillAsync($"{Form} input[name=name]", name);
        await first.ClickAsync(Submit);
        await Expect(first.Locator("#community-result")).ToContainTextAsync("Created", Slow);

        var second = await context.NewPageAsync();
        await second.GotoAsync("/");
        await second.FillAsync($"{Form} input[name=name]", name);
        await second.ClickAsync(Submit);

        await Expect(second.Locator("#community-result")).ToContainTextAsync("joined from another tab", Slow);
        await Expect(second.Locator("#client-requests")).ToHaveTextAsync("0");
        await ExpectOneMoreRow(first, "communities", before);
    }

    [Fact]
    public async Task A_forced_client_timeout_then_the_retry_creates_one_community()
    {
        var (context, page) = await demo.OpenAsync();
        await using var _ = context;
        var before = await demo.StatAsync("communities");
        await page.FillAsync($"{Form} input[name=name]", Unique("Timeout"));

        await page.ClickAsync("#misbehave-timeout");

        await Expect(page.Locator("#log")).ToContainTextAsync("gave up after 400 ms", Slow);
        await Expect(page.Locator("#community-result")).ToContainTextAsync("Created", Slow);
        await Expect(page.Locator("#community-result")).ToContainTextAsync("replayed");
        await ExpectOneMoreRow(page, "communities", before);
        await Expect(page.Locator("#client-requests")).ToHaveTextAsync("2");
    }

    [Fact]
    public async Task Retries_that_land_while_a_slowed_server_still_runs_the_first_attempt_create_one_community()
    {
        var (context, page) = await demo.OpenAsync();
        await using var _ = context;
        var before = await demo.StatAsync("communities");
        await page.FillAsync($"{Form} input[name=name]", Unique("Slow server"));

        await page.ClickAsync("#misbehave-slow");

        await Expect(page.Locator(Submit)).ToBeDisabledAsync();
        await Expect(page.Locator("#community-result")).ToContainTextAsync("Created", Slow);
        await Expect(page.Locator("#community-result")).ToContainTextAsync("replayed");
        await ExpectOneMoreRow(page, "communities", before);
        Assert.True(int.Parse(await page.TextContentAsync("#client-retries") ?? "0") >= 1);
    }

    [Fact]
    public async Task The_same_key_sent_twice_past_the_guard_creates_one_community()
    {
        var (context, page) = await demo.OpenAsync();
        await using var _ = context;
        var before = await demo.StatAsync("communities");
        var idemBefore = (await demo.StatsAsync()).GetProperty("idem");
        await page.FillAsync($"{Form} input[name=name]", Unique("Raw"));

        await page.ClickAsync("#misbehave-raw");

        await Expect(page.Locator("#log")).ToContainTextAsync("1 replayed", Slow);
        await ExpectOneMoreRow(page, "communities", before);
        await Expect(page.Locator("#client-requests")).ToHaveTextAsync("2");

        // The server's Idem counters (/stats.idem) say the same: one execution, one answer from the stored response.
        var after = (await demo.StatsAsync()).GetProperty("idem");
        Assert.Equal(idemBefore.GetProperty("executed").GetInt64() + 1, after.GetProperty("executed").GetInt64());
        Assert.Equal(
            idemBefore.GetProperty("replayed").GetInt64() + idemBefore.GetProperty("waited").GetInt64() + 1,
            after.GetProperty("replayed").GetInt64() + after.GetProperty("waited").GetInt64());
        await Expect(page.Locator("#idem-executed")).ToHaveTextAsync(after.GetProperty("executed").GetInt64().ToString(), SlowText);
    }

    [Fact]
    public async Task Naive_double_submit_without_a_key_creates_two_communities()
    {
        // What the guard and the key prevent: the same double submit as plain fetch calls without a key.
        var (context, page) = await demo.OpenAsync();
        await using var _ = context;
        var before = await demo.StatAsync("communities");
        await page.EvaluateAsync(@"name => Promise.all([1, 2].map(() => fetch('/communities', {
            method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ name, delayMs: 300 }) })))",
            Unique("Naive"));
        Assert.Equal(before + 2, await demo.StatAsync("communities"));
    }

    [Fact]
    public async Task Enter_in_the_name_field_submits_once()
    {
        var (context, page) = await demo.OpenAsync();
        await using var _ = context;
        var before = await demo.StatAsync("communities");
        await page.Locator($"{Form} input[name=delayMs]").EvaluateAsync("e => e.value = '1500'");
        await page.FocusAsync($"{Form} input[name=name]");
        await page.Keyboard.TypeAsync(Unique("Keyboard"));
        await page.Keyboard.PressAsync("Enter");
        await Expect(page.Locator(Submit)).ToBeDisabledAsync();
        await page.Keyboard.PressAsync("Enter"); // while in flight: the disabled default button blocks it

        await Expect(page.Locator("#community-result")).ToContainTextAsync("Created", Slow);
        await ExpectOneMoreRow(page, "communities", before);
    }

    [Fact]
    public async Task A_double_click_on_chat_opens_one_chat_and_clicking_again_gets_the_same_one()
    {
        var (context, page) = await demo.OpenAsync();
        await using var _ = context;
        var before = await demo.StatAsync("chats");
        await page.SelectOptionAsync("#chat-with", "alice");

        await page.DblClickAsync("form#create-chat button[type=submit]");
        await Expect(page.Locator("#chat-result")).ToContainTextAsync("Chat ", Slow);
        await ExpectOneMoreRow(page, "chats", before);
        var first = await page.TextContentAsync("#chat-result");

        await page.ClickAsync("form#create-chat button[type=submit]"); // a new intent: a new key, the same chat
        await page.WaitForFunctionAsync("() => document.querySelectorAll('#log li').length >= 2", null, new() { Timeout = 30_000 });
        await ExpectOneMoreRow(page, "chats", before);
        Assert.Equal(ChatId(first), ChatId(await page.TextContentAsync("#chat-result")));
    }

    [Fact]
    public async Task The_page_is_readable_on_a_phone_and_its_screenshot_is_taken()
    {
        var (phoneContext, phone) = await demo.OpenAsync(width: 390, height: 844);
        await using (phoneContext)
        {
            var overflow = await phone.EvaluateAsync<bool>("() => document.documentElement.scrollWidth > window.innerWidth");
            Assert.False(overflow, "no horizontal scrolling at 390 px");
            foreach (var id in new[] { "community-name", "chat-with" })
            {
                Assert.Equal(1, await phone.Locator($"label[for={id}]").CountAsync());
            }
        }

        var (context, page) = await demo.OpenAsync(width: 1280, height: 900);
        await using var _ = context;
        await page.FillAsync($"{Form} input[name=name]", "Night owls");
        await page.ClickAsync("#misbehave-slow");
        await Expect(page.Locator(Submit)).ToBeDisabledAsync();
        await Expect(page.Locator("#community-result")).ToContainTextAsync("Created", Slow);
        await page.ClickAsync("#misbehave-double");
        await Expect(page.Locator("#client-ignored")).ToHaveTextAsync("1", SlowText);
        await Expect(page.Locator(Submit)).ToBeEnabledAsync(new() { Timeout = 30_000 });
        await page.WaitForTimeoutAsync(1200); // one /stats poll after the last create
        // The README's picture is refreshed only on request (IDEM_DEMO_SCREENSHOT=docs/demo.png), so a test run
        // leaves the working tree as it found it; otherwise the screenshot goes to a temp file and is checked there.
        var requested = Environment.GetEnvironmentVariable("IDEM_DEMO_SCREENSHOT");
        var path = string.IsNullOrEmpty(requested)
            ? Path.Combine(Path.GetTempPath(), $"idem-demo-{Guid.NewGuid():N}.png")
            : Path.GetFullPath(requested, DemoFixture.RepositoryRoot);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        await page.ScreenshotAsync(new() { Path = path, FullPage = true });
        Assert.True(new FileInfo(path).Length > 10_000);
        if (string.IsNullOrEmpty(requested))
        {
            File.Delete(path);
        }
    }

    private async Task ExpectOneMoreRow(IPage page, string stat, int before)
    {
        Assert.Equal(before + 1, await demo.StatAsync(stat));
        await Expect(page.Locator($"#stat-{stat}")).ToHaveTextAsync((before + 1).ToString(), SlowText);
    }

    private static string Unique(string prefix) => $"{prefix} {Guid.NewGuid().ToString()[..8]}";

    private static string? ChatId(string? text) => text?.Split(' ', 3)[1];
}
